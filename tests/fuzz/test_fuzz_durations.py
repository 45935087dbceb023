"""Fuzz: durations, times and maintenance windows as operators write them.

Properties: the parsers raise ValueError (WindowError) and nothing else, for
any text; what they accept reads back the same (`parse_duration(
format_duration(d)) == d`, times are aware UTC); a window that parses answers
`contains` and `next_opening` for any aware instant in any zone of the tz
database, and the opening it gives holds its own start.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, timezone

from fuzzing import inputs
from hypothesis import assume, event, given
from hypothesis import strategies as st

from agent.config.durations import (
    format_duration,
    parse_duration,
    parse_signed_duration,
    parse_utc_time,
)
from agent.judge.window import WindowError, contains, next_opening, parse_window

UTC = timezone.utc
ZONES = sorted(zoneinfo.available_timezones()) or ["UTC"]

duration_texts = st.one_of(
    st.from_regex(r"\s?-?[0-9٣]{0,11}[smhdSMHDw]?\s?", fullmatch=True),
    st.builds("{}{}".format, st.integers(0, 10**10), st.sampled_from("smhd")),
    st.text(max_size=20),
)
time_texts = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), None])).map(
        lambda moment: moment.isoformat()
    ),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"]),
    st.text(max_size=40),
)
_clock = st.builds("{:02d}:{:02d}".format, st.integers(0, 23), st.integers(0, 59))
clock_texts = st.one_of(
    _clock,
    _clock,
    _clock,
    st.builds("{:02d}:{:02d}".format, st.integers(0, 25), st.integers(0, 61)),
    st.text(max_size=8),
)
day_lists = st.one_of(
    st.lists(st.sampled_from(["mon", "TUE", "wednesday", "sun", " sat ", "fri"]), max_size=8),
    st.lists(st.sampled_from(["mon", "TUE", "wednesday", "sun", " sat ", "fri"]), max_size=8),
    st.lists(st.sampled_from(["mon", "TUE", "wednesday", "sun", " sat ", "xyz", ""]), max_size=8),
    st.text(max_size=5),
    st.integers(),
    st.none(),
)
# Every zone the tz database has, and names it does not.
zone_names = st.one_of(st.sampled_from(ZONES), st.sampled_from(ZONES), st.text(max_size=30))
# Any instant Python can hold, in any fixed offset: the clock, `plan --at`.
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@inputs(5000)
@given(duration_texts)
def test_durations_parse_or_say_why(text: str) -> None:
    for parse in (parse_duration, parse_signed_duration):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert parse_duration(format_duration(abs(value))) == abs(value)
        if parse is parse_duration:
            assert value >= timedelta(0)


@inputs(3000)
@given(time_texts)
def test_times_parse_or_say_why(text: str) -> None:
    try:
        moment = parse_utc_time(text)
    except ValueError:
        event("ValueError")
        return
    event("time")
    assert moment.utcoffset() == timedelta(0)


@inputs(2000)
@given(day_lists, clock_texts, clock_texts, zone_names, instants)
def test_windows_parse_and_answer(
    days: object, start: str, end: str, zone: str, instant: datetime
) -> None:
    try:
        window = parse_window(days, start, end, zone)  # type: ignore[arg-type]
    except WindowError:
        event("WindowError")
        return
    event("window")
    inside = contains(window, instant)
    opening = next_opening(window, instant)
    assume(opening is not None)  # none within two weeks only at the end of time
    assert opening is not None
    first, last = opening
    assert first < last
    assert contains(window, first)
    assert last > instant
    assert inside == (first <= instant < last)
