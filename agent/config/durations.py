"""Durations as operators write them in the config: "30s", "5m", "2h", "60d".

A duration is a whole number followed by one unit. Compound forms ("1h30m")
are refused on purpose: one unit per value keeps configs easy to read and
errors easy to explain.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Callable, TypeVar

from agent.timefmt import parse_rfc3339

T = TypeVar("T")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"([0-9]{1,9})([smhd])")


def parse_duration(text: str) -> timedelta:
    """Given "30s", "5m", "2h" or "60d", return the timedelta.

    Raise ValueError, saying what is accepted, for anything else.
    """
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
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
    """Given seconds, return days with one decimal, for humans and perfdata
    (never "-0.0": a few seconds past expiry is 0.0 days)."""
    text = f"{seconds / 86400:.1f}"
    return "0.0" if text == "-0.0" else text


def parse_signed_duration(text: str) -> timedelta:
    """Like parse_duration, but a leading "-" gives a negative duration (for
    `--expires-in -3d`: already expired three days ago)."""
    if text.startswith("-"):
        return -parse_duration(text[1:])
    return parse_duration(text)


def within(
    parse: Callable[[str], timedelta], low: timedelta, high: timedelta
) -> Callable[[str], timedelta]:
    """Given a duration parser and bounds, return a parser that also raises
    ValueError, naming the bounds, for a duration outside them."""

    def checked(text: str) -> timedelta:
        value = parse(text)
        if not low <= value <= high:
            raise ValueError(
                f"{text!r} is out of range: write a duration between "
                f"{format_duration(low)} and {format_duration(high)}"
            )
        return value

    checked.__name__ = parse.__name__
    return checked


def parse_utc_time(text: str) -> datetime:
    """Given RFC 3339 text with an offset ("…Z", "…+01:00"), return it as aware UTC.

    Raise ValueError if it is not such a time (or lies outside years 1–9999 in UTC).
    """
    return parse_rfc3339(text)


def argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Given a parser raising ValueError, return an argparse `type=` that turns
    the error into argparse's, so the message reaches the user verbatim."""

    def convert(text: str) -> T:
        import argparse

        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert
