"""Maintenance windows: when, in the wall-clock time of a zone, a restart may start.

This module owns one window's values (days, start, end, time zone), whether an
instant is inside a window, and when a window next opens. It is pure: the time
is always an argument, never read from the clock.

Membership is by the wall clock of the window's zone. A window belongs to the
day it starts, also when it runs past midnight. kured decides otherwise: its
window belongs to the weekday of the current local time, so one over midnight
covers 00:00–end and start–24:00 of that same day, and its end is inclusive.
With `days = ["sat"]`, `start = "22:00"`, `end = "02:00"`, ours is open from
Saturday 22:00 to Sunday 02:00 (end excluded); kured's (`--reboot-days=sat
--start-time=22:00 --end-time=02:00`) is open Saturday 00:00–02:00 and
22:00–24:00, and not at all early on Sunday. We tie a window to the day it
starts because that is how people say it ("Saturday night").

In the autumn hour that repeats, both passes of a reading are inside;
readings that the spring gap skips never happen, so a window that starts in the
gap opens when the gap ends, and one lying wholly in the gap does not open that
day.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import List, Literal, Optional, Tuple

Field = Literal["days", "start", "end", "timezone"]
Span = Tuple[datetime, datetime]

_DAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = {
    name: number
    for number, abbreviation in enumerate(_DAY_ABBREVIATIONS)
    for name in (abbreviation.lower(), _DAY_NAMES[number])
}
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_END_OF_DAY = "24:00"
_UTC = timezone.utc
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
# Python keeps every UTC offset strictly within a day. Bounding searches by
# that, not by today's largest offsets (+14 h, -12 h), keeps them right for any
# tzinfo.
_OFFSET_BOUND = timedelta(days=1)
# Offsets are sampled this often; a zone would have to change its offset twice
# within one step for a change to go unseen, which no zone has ever done.
_PROBE_STEP = timedelta(hours=1)
# Two weeks and a day: even when one occurrence is lost to a spring gap and a
# day is skipped altogether (Pacific/Apia, 2011-12-30), one remains.
_HORIZON_DAYS = 15


class WindowError(ValueError):
    """A window value that cannot be used; `field` names the config key."""

    def __init__(self, field: Field, message: str) -> None:
        super().__init__(message)
        self.field: Field = field


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly window of wall-clock time in `zone` (an IANA name).

    `days` are the weekdays on which the window starts (0 = Monday). An `end`
    before `start` runs past midnight into the next day; an `end` equal to
    `start` makes the window 24 hours long, and is written "00:00"–"24:00"
    (parse_window refuses an end equal to the start otherwise: a typo must
    not open a window around the clock).
    """

    days: frozenset[int]
    start: time
    end: time
    zone: str

    @property
    def length(self) -> timedelta:
        """Given the window, return its length in wall-clock time (up to 24 h)."""
        length = _since_midnight(self.end) - _since_midnight(self.start)
        return length if length > timedelta(0) else length + _DAY

    @property
    def tz(self) -> tzinfo:
        """Given the window, return its zone, loaded once per name."""
        return _load_zone(self.zone)

    def contains(self, t: datetime) -> bool:
        """Given an aware instant, return whether it is inside the window."""
        return contains(self, t)

    def __str__(self) -> str:
        days = ", ".join(_DAY_ABBREVIATIONS[day] for day in sorted(self.days))
        # An end at midnight is the end of the day, as the config writes it.
        end = _END_OF_DAY if self.end == time(0, 0) else f"{self.end:%H:%M}"
        return f"{days} {self.start:%H:%M}–{end} {self.zone}"


def parse_days(values: object) -> frozenset[int]:
    """Given a list of day names ("sat", "Sunday"; any case), return the weekday
    numbers (0 = Monday). Raise WindowError (field "days") if it is not a
    non-empty list of day names."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise WindowError(
            "days", f'{values!r} is not a list of days: write for example ["sat", "sun"]'
        )
    if not values:
        raise WindowError("days", 'the list of days is empty: name at least one, e.g. ["sun"]')
    days = set()
    for value in values:
        day = _DAYS.get(value.strip().lower()) if isinstance(value, str) else None
        if day is None:
            raise WindowError(
                "days",
                f"{value!r} is not a day: write mon, tue, wed, thu, fri, sat or sun "
                "(or the full name)",
            )
        days.add(day)
    return frozenset(days)


def parse_clock(text: object, field: Literal["start", "end"]) -> time:
    """Given "HH:MM" (00:00 to 23:59, two-digit hour; an end may also be
    "24:00", midnight at the end of the day, returned as 00:00), return the
    time of day. Raise WindowError (with `field`) for anything else, "2:00" too."""
    stripped = text.strip() if isinstance(text, str) else None
    if field == "end" and stripped == _END_OF_DAY:
        return time(0, 0)
    match = _CLOCK.fullmatch(stripped) if stripped is not None else None
    if match is None:
        latest = '"24:00"' if field == "end" else '"23:59"'
        raise WindowError(
            field,
            f'{text!r} is not a time of day: write "HH:MM" in quotes, '
            f'from "00:00" to {latest}, for example "02:00"',
        )
    return time(int(match.group(1)), int(match.group(2)))


def parse_zone(name: object) -> str:
    """Given an IANA time zone name ("Europe/Berlin"), return it. Raise
    WindowError (field "timezone") if the tz database does not know it."""
    if isinstance(name, str):
        try:
            _load_zone(name.strip())
            return name.strip()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    searched = ", ".join(zoneinfo.TZPATH) or "no directory"
    raise WindowError(
        "timezone",
        f'{name!r} is not a known time zone: write an IANA name such as "Europe/Berlin" '
        f"(tz database searched in {searched})",
    )


def parse_window(
    days: Sequence[str], start: str, end: str, timezone: str = "UTC"
) -> MaintenanceWindow:
    """Given one window's config values, return the MaintenanceWindow. Raise
    WindowError, naming the bad value and with `field` set, for the first bad
    one (days, start, end, timezone, in that order). An end equal to the
    start is refused; a whole day is "00:00" to "24:00"."""
    parsed_days = parse_days(days)
    first = parse_clock(start, "start")
    last = parse_clock(end, "end")
    whole_day = first == time(0, 0) and isinstance(end, str) and end.strip() == _END_OF_DAY
    if last == first and not whole_day:
        raise WindowError(
            "end",
            f"{end!r} equals start: the window would be open around the clock; "
            'for a whole day write start = "00:00", end = "24:00"',
        )
    return MaintenanceWindow(days=parsed_days, start=first, end=last, zone=parse_zone(timezone))


def contains(window: MaintenanceWindow, t: datetime) -> bool:
    """Given a window and an aware instant, return whether the instant is inside
    the window. Raise ValueError if t is naive."""
    try:
        reading = _reading(window, t)
    except OverflowError:
        return False  # its wall clock lies beyond years 1–9999: no occurrence there
    # Only the occurrences starting on the reading's day or the day before can
    # hold it, since none is longer than a day.
    for back in (0, 1):
        try:
            day = reading.date() - back * _DAY
            first, last = _occurrence(window, day)
        except OverflowError:
            continue  # the day before year 1, or a window running past year 9999
        if day.weekday() in window.days and first <= reading < last:
            return True
    return False


def next_opening(window: MaintenanceWindow, t: datetime) -> Optional[Span]:
    """Given a window and an aware instant, return (start, end) in UTC of the
    opening that contains t, or else of the first one after t: every instant in
    [start, end) is inside the window, and end is where that occurrence
    closes (the next day's may open right then). Return None if none starts
    within two weeks (a window always does). Raise ValueError if t is naive.

    An opening is usually a whole day's occurrence. When the autumn repeated
    hour holds the window's start or end, the occurrence falls apart into two
    openings around readings outside it (Sun 01:00–02:30 in Europe/Berlin on
    the fall-back day is open 01:00–02:30 CEST, then again 02:00–02:30 CET),
    so that [start, end) never holds an instant outside the window.
    """
    try:
        reading = _reading(window, t)
    except OverflowError:
        return None  # its wall clock lies beyond years 1–9999: no opening there
    now = t.astimezone(_UTC).replace(tzinfo=None)
    best: Optional[Span] = None
    # Readings can run up to a day behind or ahead of UTC, so an occurrence
    # started three days before the reading may still be open at t.
    for offset in range(-3, _HORIZON_DAYS + 1):
        try:
            day = reading.date() + timedelta(days=offset)
            first, last = _occurrence(window, day)
            if best is not None and best[0] <= first - _OFFSET_BOUND:
                break  # this day's occurrence, and every later one, opens after best
            if day.weekday() not in window.days or last + _OFFSET_BOUND <= now:
                continue
            openings = _openings(window.tz, first, last)
        except OverflowError:
            continue  # beyond years 1–9999, which datetime holds: no opening there
        for opening in openings:
            # Openings never overlap, so the earliest one still open at t is
            # the one containing t, if there is one.
            if opening[1] > now and (best is None or opening[0] < best[0]):
                best = opening
    if best is None:
        return None
    return best[0].replace(tzinfo=_UTC), best[1].replace(tzinfo=_UTC)


def next_opening_of(
    windows: Sequence[MaintenanceWindow], t: datetime
) -> Optional[Tuple[datetime, datetime, MaintenanceWindow]]:
    """Given windows and an aware instant, return (start, end, window) of the
    earliest opening: one containing t wins; among several, the one open
    longest, then the first listed. Return None if there is none (no windows).
    Raise ValueError if t is naive."""
    found: List[Tuple[datetime, datetime, MaintenanceWindow]] = []
    for window in windows:
        opening = next_opening(window, t)
        if opening is not None:
            found.append((opening[0], opening[1], window))
    if not found:
        return None
    return min(found, key=lambda each: (max(each[0], t), t - each[1]))


def describe_start(start: datetime, window: MaintenanceWindow) -> str:
    """Given an aware instant and a window, return the instant as the window's
    wall clock says it: weekday, time and zone ("Sun 02:00 Europe/Berlin").
    Raise ValueError if start is naive."""
    local = _reading(window, start)
    return f"{_DAY_ABBREVIATIONS[local.weekday()]} {local:%H:%M} {window.zone}"


@functools.cache
def _load_zone(name: str) -> tzinfo:
    # UTC, the default, must work on hosts without a tz database (slim images).
    if name == "UTC":
        return _UTC
    return zoneinfo.ZoneInfo(name)


def _since_midnight(clock: time) -> timedelta:
    return timedelta(
        hours=clock.hour, minutes=clock.minute, seconds=clock.second, microseconds=clock.microsecond
    )


def _reading(window: MaintenanceWindow, t: datetime) -> datetime:
    """Given a window and an aware instant, return the naive wall-clock reading
    of the window's zone at that instant. Raise ValueError if t is naive."""
    if t.utcoffset() is None:
        raise ValueError(f"{t.isoformat()} has no time zone: windows need an aware datetime")
    return t.astimezone(window.tz).replace(tzinfo=None)


def _occurrence(window: MaintenanceWindow, day: date) -> Tuple[datetime, datetime]:
    """Given a window and a start day, return the wall-clock readings [first, last)
    that the window covers when it starts on that day."""
    first = datetime.combine(day, window.start)
    return first, first + window.length


def _openings(zone: tzinfo, first: datetime, last: datetime) -> List[Span]:
    """Given a zone and wall-clock readings [first, last), return, in order, the
    naive UTC intervals whose readings lie in that range, adjacent ones joined:
    one as a rule, none when the range lies in a spring gap, two when an end of
    it lies in an autumn repeated hour."""
    openings: List[Span] = []
    # A reading is an instant plus its offset, and offsets stay within a day.
    for begin, finish, offset in _segments(zone, first - _OFFSET_BOUND, last + _OFFSET_BOUND):
        low, high = max(begin, first - offset), min(finish, last - offset)
        if low >= high:
            continue
        if openings and openings[-1][1] == low:
            openings[-1] = (openings[-1][0], high)
        else:
            openings.append((low, high))
    return openings


def _segments(
    zone: tzinfo, low: datetime, high: datetime
) -> List[Tuple[datetime, datetime, timedelta]]:
    """Given a zone and naive UTC instants [low, high), return the consecutive
    stretches of one UTC offset covering at least that range, as (begin, end,
    offset)."""
    # Whole seconds, as offset changes are, so that bisection lands on them.
    probe = low.replace(microsecond=0)
    high = high.replace(microsecond=0) + _SECOND
    begin, offset = probe, _offset(zone, probe)
    segments: List[Tuple[datetime, datetime, timedelta]] = []
    while probe < high:
        step_end = min(probe + _PROBE_STEP, high)
        while _offset(zone, step_end) != offset:
            change = _first_change(zone, probe, step_end, offset)
            segments.append((begin, change, offset))
            begin, offset, probe = change, _offset(zone, change), change
        probe = step_end
    segments.append((begin, high, offset))
    return segments


def _first_change(zone: tzinfo, before: datetime, after: datetime, offset: timedelta) -> datetime:
    """Given a zone, whole-second naive UTC instants before < after, where the
    offset is `offset` at before and not at after, return the first whole
    second in (before, after] with another offset."""
    while after - before > _SECOND:
        middle = (before + (after - before) / 2).replace(microsecond=0)
        if _offset(zone, middle) == offset:
            before = middle
        else:
            after = middle
    return after


def _offset(zone: tzinfo, instant: datetime) -> timedelta:
    """Given a zone and a naive UTC instant, return the zone's UTC offset then."""
    return instant.replace(tzinfo=_UTC).astimezone(zone).replace(tzinfo=None) - instant
