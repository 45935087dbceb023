"""RFC 3339 text in one place (agent.timefmt): four-digit years, exact round
trips, and ValueError (never OverflowError) for times datetime cannot hold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.timefmt import (
    format_rfc3339,
    format_utc_date,
    format_utc_minutes,
    format_utc_seconds,
    parse_rfc3339,
)

UTC = timezone.utc


@pytest.mark.parametrize(
    ("moment", "whole", "auto", "micro"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
         "0001-01-01T00:00:00.000000Z"),
        (datetime(999, 12, 31, 23, 59, 59, 5, tzinfo=UTC), "0999-12-31T23:59:59Z",
         "0999-12-31T23:59:59.000005Z", "0999-12-31T23:59:59.000005Z"),
        (datetime(2026, 12, 6, 2, 30, tzinfo=timezone(timedelta(hours=1))),
         "2026-12-06T01:30:00Z", "2026-12-06T01:30:00Z", "2026-12-06T01:30:00.000000Z"),
    ],
)  # fmt: skip
def test_format(moment: datetime, whole: str, auto: str, micro: str) -> None:
    assert format_rfc3339(moment) == whole
    assert format_rfc3339(moment, fraction="auto") == auto
    assert format_rfc3339(moment, fraction="micro") == micro


def test_human_forms_pad_the_year() -> None:
    moment = datetime(812, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert format_utc_seconds(moment) == "0812-03-04 05:06:07 UTC"
    assert format_utc_minutes(moment) == "0812-03-04 05:06 UTC"
    assert format_utc_date(moment) == "0812-03-04"


def test_naive_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_rfc3339(datetime(2026, 1, 1))


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
)
def test_round_trip(moment: datetime) -> None:
    aware = moment.replace(tzinfo=UTC)
    assert parse_rfc3339(format_rfc3339(aware, fraction="auto")) == aware
    assert parse_rfc3339(format_rfc3339(aware, fraction="micro")) == aware


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T12:00:00.123456789Z", datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-29t12:00:00z", datetime(2026, 11, 29, 12, tzinfo=UTC)),
        ("2026-12-06T02:30:00+01:00", datetime(2026, 12, 6, 1, 30, tzinfo=UTC)),
        ("2026-12-06T02:30:00-00:30", datetime(2026, 12, 6, 3, 0, tzinfo=UTC)),
    ],
)
def test_parse(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # In UTC this is before year 1: datetime raised OverflowError here.
        ("0001-01-01T00:30:00+01:00", "is not an RFC 3339 time"),
        ("9999-12-31T23:30:00-01:00", "is not an RFC 3339 time"),
        ("2026-02-30T00:00:00Z", "day is out of range"),
        ("2026-11-29T12:00:00", "needs a UTC offset"),
        ("2026-11-29 12:00:00Z", "is not an RFC 3339 time"),
        ("20261129T120000Z", "is not an RFC 3339 time"),
        ("２０２６-11-29T12:00:00Z", "is not an RFC 3339 time"),
        ("2026-11-29T12:00:00Z\n", "is not an RFC 3339 time"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rfc3339(text)
