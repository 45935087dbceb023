"""Durations as operators write them in the config: "30s", "5m", "2h", "60d".

A duration is a whole number followed by one unit. Compound forms ("1h30m")
are refused on purpose: one unit per value keeps configs easy to read and
errors easy to explain.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^([0-9]{1,9})([smhd])$")


def parse_duration(text: str) -> timedelta:
    """Given "30s", "5m", "2h" or "60d", return the timedelta.

    Raise ValueError, saying what is accepted, for anything else.
    """
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and one unit, "
            'for example "30s", "5m", "2h" or "60d"'
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """Given a timedelta, return the largest exact unit form ("60d", "90m")."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def format_days(seconds: float) -> str:
    """Given seconds, return days with one decimal, for humans and perfdata."""
    return f"{seconds / 86400:.1f}"
