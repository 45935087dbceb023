"""Times as text: the one place that writes and reads RFC 3339 and the short
UTC forms people read in summaries.

Every formatter writes the year with four digits, whatever the platform's
`strftime("%Y")` does (glibc writes year 999 as "999", which no RFC 3339
reader accepts), and refuses a naive datetime. The one parser reads what the
formatters write and what Kubernetes writes (MicroTime, any fraction, `Z` or
an offset), and raises ValueError, never OverflowError, for a time outside
datetime's range once it is moved to UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = [
    "format_rfc3339",
    "format_utc_date",
    "format_utc_minutes",
    "format_utc_seconds",
    "parse_rfc3339",
]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: times must be timezone-aware")
    return moment.astimezone(timezone.utc)


def _date(utc: datetime) -> str:
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"


def format_rfc3339(moment: datetime, *, fraction: str = "none") -> str:
    """Given an aware datetime, return it as RFC 3339 UTC with a `Z`.

    `fraction` is "none" (whole seconds, for people and JSON output), "auto"
    (microseconds when there are any, for the state file, which must give
    back the exact time) or "micro" (always six digits: a Kubernetes
    MicroTime). Raise ValueError if the datetime is naive.
    """
    utc = _utc(moment)
    text = f"{_date(utc)}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if fraction == "micro" or (fraction == "auto" and utc.microsecond):
        text += f".{utc.microsecond:06d}"
    elif fraction not in ("none", "auto"):
        raise ValueError(f"unknown fraction {fraction!r}")
    return text + "Z"


def format_utc_seconds(moment: datetime) -> str:
    """Given an aware datetime, return `2026-01-09 08:58:13 UTC`."""
    utc = _utc(moment)
    return f"{_date(utc)} {utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} UTC"


def format_utc_minutes(moment: datetime) -> str:
    """Given an aware datetime, return `2026-01-09 08:58 UTC`."""
    utc = _utc(moment)
    return f"{_date(utc)} {utc.hour:02d}:{utc.minute:02d} UTC"


def format_utc_date(moment: datetime) -> str:
    """Given an aware datetime, return its UTC date, `2026-01-09`."""
    return _date(_utc(moment))


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)


def parse_rfc3339(text: str, *, where: str = "") -> datetime:
    """Given RFC 3339 text with `Z` or an offset (`2026-12-06T02:30:00+01:00`,
    any fraction up to nanoseconds, which are cut to microseconds), return it
    as an aware UTC datetime.

    Raise ValueError naming the text (cut to 60 characters) if it is not such
    a time, has no offset, or lies outside years 1–9999 once in UTC.
    """
    shown = repr(text[:60]) if isinstance(text, str) else repr(text)
    prefix = f"{where}: " if where else ""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{prefix}{shown} is not an RFC 3339 time: write e.g. 2026-12-06T02:30:00+01:00 "
            "or 2026-12-06T01:30:00Z"
        )
    year, month, day, hour, minute, second, digits, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and sign is None:
        raise ValueError(
            f"{prefix}{shown} is not an RFC 3339 time: it needs a UTC offset, e.g. +01:00 or Z"
        )
    micro = int((digits or "0")[:6].ljust(6, "0"))
    try:
        offset = timedelta(0)
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
            tzinfo=timezone(offset),
        )  # fmt: skip
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{prefix}{shown} is not an RFC 3339 time: {exc}") from None
