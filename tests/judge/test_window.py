from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple
from zoneinfo import ZoneInfo

import pytest
from fuzz.fuzzing import inputs
from hypothesis import given
from hypothesis import strategies as st

from agent.judge.window import (
    MaintenanceWindow,
    WindowError,
    contains,
    describe_start,
    next_opening,
    next_opening_of,
    parse_days,
    parse_window,
    parse_zone,
)

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
WEEK_MINUTES = 7 * 1440
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

# The instants at which each zone changes its offset in 2026 (all early on a
# Sunday, local time); Lord Howe moves by 30 minutes, Kolkata and UTC never move.
TRANSITIONS: Dict[str, List[datetime]] = {
    "Europe/Berlin": [datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)],
    "America/New_York": [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)],
    "Australia/Lord_Howe": [
        datetime(2026, 4, 4, 15, tzinfo=UTC),
        datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
    ],
    "Asia/Kolkata": [],
    "UTC": [],
}


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def window(days: str, start: str, end: str, zone: str = "UTC") -> MaintenanceWindow:
    return parse_window(days.split(), start, end, zone)


# The reference: the membership rule restated in minutes of the local week, and
# openings found by walking real minutes one at a time.


def reference_owner(w: MaintenanceWindow, instant: datetime) -> Optional[int]:
    """The weekday whose occurrence holds the instant's local reading, if any."""
    local = instant.astimezone(ZoneInfo(w.zone))
    minute = local.weekday() * 1440 + local.hour * 60 + local.minute
    start = w.start.hour * 60 + w.start.minute
    length = (w.end.hour * 60 + w.end.minute - start) % 1440 or 1440
    for day in w.days:
        if (minute - day * 1440 - start) % WEEK_MINUTES < length:
            return day
    return None


def reference_opening(w: MaintenanceWindow, t: datetime) -> Optional[Tuple[datetime, datetime]]:
    """The run of minutes, owned by one occurrence, that holds t or comes next."""
    found, owner = t, reference_owner(w, t)
    while owner is None:
        found += MINUTE
        if found - t > timedelta(days=16):
            return None
        owner = reference_owner(w, found)
    start, end = found, found + MINUTE
    while reference_owner(w, start - MINUTE) == owner:
        start -= MINUTE
    while reference_owner(w, end) == owner:
        end += MINUTE
    return start.astimezone(UTC), end.astimezone(UTC)


def minute_of_day(local: datetime) -> int:
    return local.hour * 60 + local.minute


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def on_grid(low: int, high: int, grid: int) -> st.SearchStrategy[int]:
    """Minutes of the day from low to high that are multiples of grid."""
    return st.integers(-(-low // grid), high // grid).map(lambda n: n * grid)


def generated_window(days: List[str], start: int, end: int, zone: str) -> MaintenanceWindow:
    """A window from minutes of the day; end == start is a 24-hour window from
    any start, which the config spells only as 00:00–24:00, so it is built
    directly to keep the arithmetic for all of them under test."""
    if end == start:
        hours, minutes = divmod(start, 60)
        clock = time(hours, minutes)
        return MaintenanceWindow(parse_days(days), clock, clock, parse_zone(zone))
    return parse_window(days, clock_text(start), clock_text(end), zone)


@st.composite
def any_cases(draw: st.DrawFn) -> Tuple[MaintenanceWindow, datetime]:
    """A random window and a whole-minute instant between 2024 and 2030."""
    zone = draw(st.sampled_from(sorted(TRANSITIONS)))
    days = draw(st.lists(st.sampled_from(DAY_NAMES), min_size=1, max_size=9))
    grid = draw(st.sampled_from([1, 15]))
    start = draw(on_grid(0, 1439, grid))
    end = draw(st.one_of(on_grid(0, 1439, grid), st.just(start)))
    t = utc(2024, 1, 1) + draw(st.integers(0, 6 * 365 * 1440)) * MINUTE
    return generated_window(days, start, end, zone), t


@st.composite
def transition_cases(draw: st.DrawFn) -> Tuple[MaintenanceWindow, datetime]:
    """A window starting on a transition's day, with start or end near the gap
    or repeated stretch, and a whole-minute instant from a day before it to
    three hours after."""
    zone = draw(st.sampled_from([zone for zone, instants in TRANSITIONS.items() if instants]))
    transition = draw(st.sampled_from(TRANSITIONS[zone]))
    local = [(transition + k * MINUTE).astimezone(ZoneInfo(zone)) for k in (-1, 0)]
    extra = draw(st.lists(st.sampled_from(DAY_NAMES), max_size=3))
    days = [DAY_NAMES[local[0].weekday()], *extra]
    grid = draw(st.sampled_from([1, 15]))
    # From half an hour before the gap or repeated stretch to half an hour after.
    readings = [minute_of_day(reading) for reading in local]
    near = on_grid(min(readings) - 30, max(readings) + 30, grid)
    anywhere = on_grid(0, 1439, grid)
    start = draw(st.one_of(near, anywhere))
    end = draw(st.one_of(near, anywhere, st.just(start)))
    t = transition + draw(st.integers(-26 * 60, 3 * 60)) * MINUTE
    return generated_window(days, start, end, zone), t


def cases() -> st.SearchStrategy[Tuple[MaintenanceWindow, datetime]]:
    return st.one_of(any_cases(), transition_cases())


@inputs(200, quick=20)
@given(cases())
def test_contains_matches_the_reference(case: Tuple[MaintenanceWindow, datetime]) -> None:
    w, t = case
    for minute in range(-150, 150, 7):
        instant = t + minute * MINUTE
        assert contains(w, instant) == (reference_owner(w, instant) is not None), instant


@inputs(200, quick=20)
@given(cases())
def test_next_opening_matches_the_reference(case: Tuple[MaintenanceWindow, datetime]) -> None:
    w, t = case
    opening = next_opening(w, t)
    assert opening == reference_opening(w, t)
    assert opening is not None
    start, end = opening
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert w.contains(t) == (start <= t)


@inputs(100, quick=10)
@given(st.lists(cases(), min_size=1, max_size=3))
def test_next_opening_of_is_the_earliest(found: List[Tuple[MaintenanceWindow, datetime]]) -> None:
    windows = [w for w, _ in found]
    t = found[0][1]
    result = next_opening_of(windows, t)
    assert result is not None
    start, end, chosen = result
    assert (start, end) == next_opening(chosen, t)
    for w in windows:
        other = next_opening(w, t)
        assert other is not None
        assert max(start, t) <= max(other[0], t)


def test_transitions_are_where_the_tz_database_has_them() -> None:
    for zone, instants in TRANSITIONS.items():
        for instant in instants:
            before = (instant - timedelta(seconds=1)).astimezone(ZoneInfo(zone))
            assert before.utcoffset() != instant.astimezone(ZoneInfo(zone)).utcoffset()
            assert before.weekday() == 6


# Tables over real zones.

BERLIN = "Europe/Berlin"


def test_fall_back_both_passes_of_the_repeated_hour_are_inside() -> None:
    w = window("sun", "02:00", "03:00", BERLIN)
    assert not w.contains(utc(2026, 10, 24, 23, 59))  # 01:59 CEST
    assert w.contains(utc(2026, 10, 25, 0, 0))  # 02:00 CEST
    assert w.contains(utc(2026, 10, 25, 0, 30))  # 02:30 CEST
    assert w.contains(utc(2026, 10, 25, 1, 30))  # 02:30 CET
    assert not w.contains(utc(2026, 10, 25, 2, 0))  # 03:00 CET
    assert next_opening(w, utc(2026, 10, 24, 12)) == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 2))


def test_fall_back_window_ending_in_the_repeated_hour_opens_twice() -> None:
    # 02:30-02:59 CEST reads as after the end; 02:00-02:29 CET reads as inside.
    w = window("sun", "01:00", "02:30", BERLIN)
    first = (utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 30))
    second = (utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 30))
    assert next_opening(w, utc(2026, 10, 24, 12)) == first
    assert next_opening(w, utc(2026, 10, 25, 0, 10)) == first
    assert not w.contains(utc(2026, 10, 25, 0, 45))
    assert next_opening(w, utc(2026, 10, 25, 0, 45)) == second


def test_spring_gap_start_opens_when_the_gap_ends() -> None:
    w = window("sun", "02:30", "04:00", BERLIN)
    assert not w.contains(utc(2026, 3, 29, 0, 59))  # 01:59 CET
    assert w.contains(utc(2026, 3, 29, 1, 0))  # 03:00 CEST
    assert next_opening(w, utc(2026, 3, 28, 12)) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))


def test_spring_gap_end_closes_when_the_gap_starts() -> None:
    w = window("sun", "01:00", "02:30", BERLIN)
    assert next_opening(w, utc(2026, 3, 28, 12)) == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1))


def test_window_wholly_in_the_spring_gap_skips_that_day() -> None:
    w = window("sun", "02:00", "02:30", BERLIN)
    assert next_opening(w, utc(2026, 3, 28, 12)) == (utc(2026, 4, 5, 0), utc(2026, 4, 5, 0, 30))


def test_lord_howe_half_hour_shifts() -> None:
    # Spring: 02:00 jumps to 02:30 (UTC+10:30 to +11); autumn: 02:00 back to 01:30.
    spring = window("sun", "01:30", "02:30", "Australia/Lord_Howe")
    assert next_opening(spring, utc(2026, 10, 3)) == (
        utc(2026, 10, 3, 15),
        utc(2026, 10, 3, 15, 30),
    )
    autumn = window("sun", "01:30", "02:00", "Australia/Lord_Howe")
    assert next_opening(autumn, utc(2026, 4, 4)) == (
        utc(2026, 4, 4, 14, 30),
        utc(2026, 4, 4, 15, 30),
    )


def test_over_midnight_belongs_to_the_day_it_starts() -> None:
    w = window("sat", "23:00", "01:00")
    assert w.contains(utc(2026, 6, 6, 23, 0))  # Sat 23:00
    assert w.contains(utc(2026, 6, 7, 0, 30))  # Sun 00:30
    assert not w.contains(utc(2026, 6, 6, 0, 30))  # Sat 00:30
    assert not w.contains(utc(2026, 6, 7, 1, 0))
    assert next_opening(w, utc(2026, 6, 7, 0, 30)) == (utc(2026, 6, 6, 23), utc(2026, 6, 7, 1))


def test_end_equal_to_start_is_refused_a_whole_day_is_00_to_24() -> None:
    # A typo (end = start) must not open a window around the clock.
    for start in ("02:00", "00:00"):
        with pytest.raises(WindowError, match="equals start") as raised:
            window("sat", start, start)
        assert raised.value.field == "end"
    w = window("sat", "00:00", "24:00")
    assert w.length == timedelta(hours=24)
    assert str(w) == "Sat 00:00–24:00 UTC"
    assert not w.contains(utc(2026, 6, 5, 23, 59))
    assert w.contains(utc(2026, 6, 6, 0, 0))
    assert w.contains(utc(2026, 6, 6, 23, 59, 59, 999999))
    assert not w.contains(utc(2026, 6, 7, 0, 0))
    assert next_opening(w, utc(2026, 6, 1)) == (utc(2026, 6, 6), utc(2026, 6, 7))


def test_24_00_ends_a_window_at_midnight() -> None:
    w = window("sat", "22:00", "24:00")
    assert w.length == timedelta(hours=2)
    assert str(w) == "Sat 22:00–24:00 UTC"
    assert w.contains(utc(2026, 6, 6, 23, 59))
    assert not w.contains(utc(2026, 6, 7, 0, 0))


def test_window_belongs_to_the_day_it_starts_unlike_kured() -> None:
    # The example of the module docstring: Saturday 22:00 to Sunday 02:00.
    w = window("sat", "22:00", "02:00")
    assert w.contains(utc(2026, 6, 7, 1, 0))  # Sunday 01:00: ours is open
    assert not w.contains(utc(2026, 6, 6, 1, 0))  # Saturday 01:00: kured's would be
    assert not w.contains(utc(2026, 6, 7, 2, 0))  # the end is excluded


def test_adjacent_days_open_one_after_the_other() -> None:
    w = window("sat sun", "00:00", "24:00")
    assert next_opening(w, utc(2026, 6, 6, 12)) == (utc(2026, 6, 6), utc(2026, 6, 7))
    assert next_opening(w, utc(2026, 6, 7)) == (utc(2026, 6, 7), utc(2026, 6, 8))


def test_instants_in_other_zones_and_between_minutes() -> None:
    w = window("sat", "02:00", "04:00", BERLIN)
    new_york = ZoneInfo("America/New_York")
    assert w.contains(datetime(2026, 6, 5, 20, 0, tzinfo=new_york))  # Sat 02:00 CEST
    assert not w.contains(datetime(2026, 6, 5, 19, 59, 59, 999999, tzinfo=new_york))
    assert next_opening(w, utc(2026, 6, 6, 1, 59, 30)) == (utc(2026, 6, 6, 0), utc(2026, 6, 6, 2))


def test_naive_instants_are_refused() -> None:
    w = window("sat", "02:00", "04:00")
    for call in (contains, next_opening, lambda x, t: describe_start(t, x)):
        with pytest.raises(ValueError, match="no time zone"):
            call(w, datetime(2026, 6, 6, 3))


def test_next_opening_of_several_windows() -> None:
    saturday = window("sat", "02:00", "04:00", BERLIN)
    sunday = window("sun", "01:00", "05:00", BERLIN)
    short_saturday = window("sat", "01:00", "03:00", BERLIN)
    friday = utc(2026, 6, 5, 12)
    assert next_opening_of([sunday, saturday], friday) == (
        utc(2026, 6, 6, 0),
        utc(2026, 6, 6, 2),
        saturday,
    )
    # Open now wins over an earlier start; of two open now, the longer open.
    now = utc(2026, 6, 6, 0, 30)
    assert next_opening_of([short_saturday, saturday], now) == (
        utc(2026, 6, 6, 0),
        utc(2026, 6, 6, 2),
        saturday,
    )
    assert next_opening_of([short_saturday, saturday], utc(2026, 6, 5, 23, 30)) == (
        utc(2026, 6, 5, 23),
        utc(2026, 6, 6, 1),
        short_saturday,
    )
    assert next_opening_of([], friday) is None


def test_text_for_logs() -> None:
    w = parse_window(["Sunday", "SAT", "sat"], "02:00", "04:00", BERLIN)
    assert str(w) == "Sat, Sun 02:00–04:00 Europe/Berlin"
    assert describe_start(utc(2026, 6, 7, 0), w) == "Sun 02:00 Europe/Berlin"
    assert describe_start(utc(2026, 10, 25, 1, 30), w) == "Sun 02:30 Europe/Berlin"
    assert str(window("mon fri", "23:00", "01:00")) == "Mon, Fri 23:00–01:00 UTC"


def test_parse_accepts() -> None:
    w = parse_window([" Mon ", "monday", "SUN"], " 00:00 ", "23:59")
    assert w == MaintenanceWindow(frozenset({0, 6}), time(0, 0), time(23, 59), "UTC")
    assert w.tz is UTC  # no tz database needed for the default
    assert parse_window(("fri",), "02:00", "04:00", " Asia/Kolkata ").zone == "Asia/Kolkata"
    assert hash(w) == hash(parse_window(["mon", "sun"], "00:00", "23:59", "UTC"))


GOOD: Dict[str, Any] = {"days": ["sat"], "start": "02:00", "end": "04:00", "timezone": BERLIN}


@pytest.mark.parametrize(
    ("bad", "field", "named"),
    [
        ({"days": ["sat", "funday"]}, "days", "'funday'"),
        ({"days": ["sa"]}, "days", "'sa'"),
        ({"days": ["sat", 6]}, "days", "6"),
        ({"days": []}, "days", "empty"),
        ({"days": "sat"}, "days", "'sat'"),
        ({"days": None}, "days", "None"),
        ({"start": "25:00"}, "start", "'25:00'"),
        ({"start": "24:00"}, "start", "'24:00'"),
        ({"start": "2:00"}, "start", "'2:00'"),
        ({"start": "02:60"}, "start", "'02:60'"),
        ({"start": "02:00:00"}, "start", "'02:00:00'"),
        ({"start": ""}, "start", "''"),
        ({"start": time(2, 0)}, "start", "datetime.time(2, 0)"),
        ({"end": "4pm"}, "end", "'4pm'"),
        ({"end": "24:01"}, "end", "'24:01'"),
        ({"end": "02:00"}, "end", "equals start"),
        ({"end": 400}, "end", "400"),
        ({"timezone": "Europe/Berln"}, "timezone", "'Europe/Berln'"),
        ({"timezone": "Europe"}, "timezone", "'Europe'"),
        ({"timezone": ""}, "timezone", "''"),
        ({"timezone": "../etc/passwd"}, "timezone", "'../etc/passwd'"),
        ({"timezone": "/etc/localtime"}, "timezone", "'/etc/localtime'"),
        ({"timezone": None}, "timezone", "None"),
        ({"days": [], "start": "25:00"}, "days", "empty"),
    ],
)
def test_parse_refuses(bad: Dict[str, Any], field: str, named: str) -> None:
    with pytest.raises(WindowError, match=re.escape(named)) as raised:
        parse_window(**{**GOOD, **bad})
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError)
