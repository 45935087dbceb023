"""The sample config (agent/config/example.py): the shipped file is the
generated one, and it parses to the defaults, commented out or not."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from agent.config.example import render_example, toml_value
from agent.config.loader import default_config, parse_config
from agent.config.schema import SCHEMA
from agent.config.types import LeaseConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.toml"


def uncomment(example: str) -> str:
    """Uncomment the settings and table headers of the example, not the prose."""
    return re.sub(r"(?m)^# (?=\[|[a-z_]+ = )", "", example)


def test_shipped_example_is_generated_from_schema() -> None:
    assert EXAMPLE.read_text() == render_example(), (
        "examples/config.toml is stale: regenerate with "
        "`kube-loopback-guard config --example > examples/config.toml`"
    )


def test_example_uncommented_parses_to_the_defaults() -> None:
    text = uncomment(render_example())
    # Every option of every table is really uncommented, so this is not vacuous.
    for table in SCHEMA:
        for option in table.options:
            assert re.search(rf"(?m)^{option.key} = ", text), option.key
    config = parse_config(text, "example.toml")
    defaults = default_config()
    assert config.path == "example.toml"
    assert (config.interval, config.state_dir, config.thresholds, config.targets) == (
        defaults.interval,
        defaults.state_dir,
        defaults.thresholds,
        defaults.targets,
    )
    assert config.metrics == defaults.metrics
    # Tables that are off by default show examples, not defaults: everything
    # else in [restart] is the default, the examples parse to what they say.
    assert replace(config.restart, windows=(), lease=None) == defaults.restart
    (window,) = config.restart.windows
    assert str(window) == "Sat, Sun 02:00–04:00 Europe/Berlin"
    assert config.restart.lease == LeaseConfig(
        kubeconfig="/etc/kubernetes/admin.conf",
        namespace="kube-system",
        name="kube-loopback-guard",
        duration=timedelta(minutes=15),
        identity="",
    )


def test_example_as_shipped_parses_to_the_defaults() -> None:
    config = parse_config(render_example(), "example.toml")
    assert config.targets == default_config().targets


def test_toml_values_read_back_as_written() -> None:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib

    for value in ("plain", 'quote " and \\ backslash', 7, True, False, ("a", "b"), ()):
        parsed = tomllib.loads(f"key = {toml_value(value)}")["key"]
        assert parsed == (list(value) if isinstance(value, tuple) else value)
