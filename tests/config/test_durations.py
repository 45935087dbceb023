from __future__ import annotations

from datetime import timedelta

import pytest

from agent.config.durations import format_days, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("60d", timedelta(days=60)),
        (" 1096d ", timedelta(days=1096)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_accepts_one_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "1h30m", "-5m", "5 m", "5M", "1.5h", "5w", "ten"])
def test_parse_refuses_everything_else(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=60), "60d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_format_days_one_decimal() -> None:
    assert format_days(41.24 * 86400) == "41.2"
    assert format_days(-86400) == "-1.0"


def test_signed_duration() -> None:
    from agent.config.durations import parse_signed_duration

    assert parse_signed_duration("-3d") == -timedelta(days=3)
    assert parse_signed_duration("10d") == timedelta(days=10)
    with pytest.raises(ValueError):
        parse_signed_duration("--3d")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T02:30:00+01:00", "2026-12-06T01:30:00+00:00"),
        ("2026-12-06T02:30:00Z", "2026-12-06T02:30:00+00:00"),
    ],
)
def test_utc_time(text: str, expected: str) -> None:
    from agent.config.durations import parse_utc_time

    assert parse_utc_time(text).isoformat() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("yesterday", "is not an RFC 3339 time"), ("2026-12-06T02:30:00", "needs a UTC offset")],
)
def test_utc_time_refuses(text: str, message: str) -> None:
    from agent.config.durations import parse_utc_time

    with pytest.raises(ValueError, match=message):
        parse_utc_time(text)


def test_format_days_never_negative_zero() -> None:
    assert format_days(-100) == "0.0"  # 100 s past expiry is not "-0.0 days"
    assert format_days(-0.0) == "0.0"
    assert format_days(-4400) == "-0.1"
