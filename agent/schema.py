"""The configuration schema: every key, its type, default and meaning.

This is the one place options are documented. `agent.config` validates
against it, and `render_example()` writes the sample config shipped as
/etc/kube-loopback-guard/config.toml (a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

# A default as it is written in TOML: str, int, bool or a list of str.
Default = Union[str, int, bool, Tuple[str, ...]]


@dataclass(frozen=True)
class Option:
    key: str
    kind: str  # see agent.config._KINDS
    default: Default
    description: str


@dataclass(frozen=True)
class Table:
    """A TOML table; `array` for [[name]] tables (one entry per item)."""

    name: str
    description: str
    options: tuple[Option, ...]
    array: bool = False
    # For array tables: how many entries the default config has (0 or 1).
    default_entries: int = 0


TOP = Table(
    name="",
    description="kube-loopback-guard configuration.",
    options=(
        Option(
            "interval",
            "positive-duration",
            "5m",
            "How often the daemon (`run`) checks every target.",
        ),
        Option(
            "state_dir",
            "path",
            "/var/lib/kube-loopback-guard",
            "Where the daemon keeps what it last saw (StateDirectory= in the unit).",
        ),
    ),
)

THRESHOLDS = Table(
    name="thresholds",
    description="When the time left on the loopback certificate turns a state.",
    options=(
        Option(
            "warning",
            "positive-duration",
            "60d",
            "WARNING when less than this is left.",
        ),
        Option(
            "critical",
            "positive-duration",
            "14d",
            "CRITICAL when less than this is left; must be shorter than warning.",
        ),
    ),
)

TARGETS = Table(
    name="targets",
    description=(
        "One [[targets]] table per apiserver to watch. Without any, one target\n"
        'named "kube-apiserver" with the defaults below is watched.'
    ),
    array=True,
    default_entries=1,
    options=(
        Option(
            "name",
            "name",
            "kube-apiserver",
            "Unique name, used in output, metrics labels and the journal.",
        ),
        Option(
            "process_name",
            "string",
            "kube-apiserver",
            "Process to find (/proc/PID/comm or argv[0]); empty = do not look for one.",
        ),
        Option(
            "host",
            "host",
            "",
            "Address to probe; empty = the process's --bind-address,\n"
            "or 127.0.0.1 when that is absent or a wildcard.",
        ),
        Option(
            "port",
            "port",
            0,
            "Port to probe; 0 = the process's --secure-port, else 6443.",
        ),
        Option(
            "server_name",
            "string",
            "apiserver-loopback-client",
            "TLS SNI that makes the apiserver serve its loopback certificate.",
        ),
        Option(
            "timeout",
            "probe-timeout",
            "5s",
            "Deadline for the whole probe (connect, TLS handshake, /livez read).",
        ),
        Option(
            "lifetime",
            "lifetime",
            "auto",
            'Certificate lifetime assumed when only the process start time is known:\n"auto" '
            "(the lifetime learned from the last probe of the same process, else\n"
            '365 days, the shortest upstream lifetime) or a duration such as "1096d".',
        ),
    ),
)

METRICS = Table(
    name="metrics",
    description="Prometheus node_exporter textfile collector output.",
    options=(
        Option(
            "textfile",
            "metrics-file",
            "",
            "File written atomically after every check of the daemon, e.g.\n"
            "/var/lib/node_exporter/textfile_collector/kube_loopback_guard.prom;\n"
            '"" (the default) writes none. The name must end in ".prom".',
        ),
    ),
)

SCHEMA: tuple[Table, ...] = (TOP, THRESHOLDS, METRICS, TARGETS)


def _toml_value(value: Default) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> list[str]:
    return ["# " + line for line in text.splitlines()]


def render_example() -> str:
    """Return the sample config: every option with its default, commented out.

    Uncommenting any line keeps the behaviour the same; the test suite checks
    that the uncommented sample parses to exactly the defaults.
    """
    lines = [
        "# kube-loopback-guard configuration (TOML).",
        "# Generated from agent/schema.py: `kube-loopback-guard config --example`.",
        "# Every value shown is the default; uncomment a line to change it.",
        '# Durations are a whole number and one unit: "30s", "5m", "2h", "60d".',
    ]
    for table in SCHEMA:
        lines.append("")
        if table.name:
            lines.extend(_comment(table.description))
            header = f"[[{table.name}]]" if table.array else f"[{table.name}]"
            lines.append("# " + header)
        for option in table.options:
            lines.extend(_comment(option.description))
            lines.append(f"# {option.key} = {_toml_value(option.default)}")
    return "\n".join(lines) + "\n"
