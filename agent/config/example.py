"""The sample config, written from the schema: every option with its default
(or, in tables that are off by default, an example), commented out. Shipped
as /etc/kube-loopback-guard/config.toml and examples/config.toml; printed by
`kube-loopback-guard config --example`."""

from __future__ import annotations

from agent.config.schema import SCHEMA, Default

__all__ = ["render_example", "toml_value"]


def toml_value(value: Default) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> list[str]:
    return ["# " + line for line in text.splitlines()]


def render_example() -> str:
    """Return the sample config: every option with its default, commented out.

    Uncommenting any line keeps the behaviour the same, except in tables that
    are off by default ([[restart.windows]], [restart.lease]), whose sample
    values are examples; the test suite checks both.
    """
    lines = [
        "# kube-loopback-guard configuration (TOML).",
        "# Generated from agent/config/schema.py: `kube-loopback-guard config --example`.",
        "# Every value shown is the default (examples in tables that are off by",
        "# default); uncomment a line to change it.",
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
            value = option.example if option.example is not None else option.default
            lines.append(f"# {option.key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
