"""Write TOML text from plain values, for the config harness.

Every table is written inline (`restart = {enabled = true, windows = [{...}]}`),
which TOML reads exactly as `[restart]` / `[[restart.windows]]` sections, so
one small writer covers every shape the schema has. No TOML writer ships with
Python, and the test extras stay what they are.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from typing import Any, Dict


def toml_document(document: Dict[str, Any]) -> str:
    """Given a dict of TOML values, return it as TOML text, one key per line."""
    return "".join(f"{_key(key)} = {toml_value(value)}\n" for key, value in document.items())


def toml_value(value: Any) -> str:
    """Given a TOML value (str, bool, int, float, date/time, list, dict), return its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + inner + "}"
    raise TypeError(f"no TOML for {value!r}")


def _key(key: str) -> str:
    return _string(key)


def _string(text: str) -> str:
    # JSON's escapes are a subset of TOML's basic-string escapes; TOML also
    # wants DEL escaped. Surrogates cannot be written at all (callers avoid them).
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
