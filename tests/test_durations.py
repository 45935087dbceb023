from __future__ import annotations

from datetime import timedelta

import pytest

from agent.durations import format_days, format_duration, parse_duration


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
