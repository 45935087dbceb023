"""The configuration: TOML in, frozen values (`agent.config.types`) out."""

# Here, not in the loader: `--help` names it without loading the config machinery.
DEFAULT_CONFIG_PATH = "/etc/kube-loopback-guard/config.toml"
