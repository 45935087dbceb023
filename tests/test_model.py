"""agent.model's one definition of "the same process" (issue 8.7), used by
discovery, restart verification, the PID-checked SIGTERM and the state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.model import SAME_START_TOLERANCE, ApiserverProcess, same_process
from agent.state.records import ProcessRecord

START = datetime(2026, 1, 9, 9, 58, 13, tzinfo=timezone.utc)


def _process(pid: int, started_at: datetime) -> ApiserverProcess:
    return ApiserverProcess(pid, "kube-apiserver", started_at, 6443, None)


@pytest.mark.parametrize(
    ("pid", "shift", "same"),
    [
        (10, timedelta(0), True),
        (10, timedelta(milliseconds=600), True),  # psutil >= 7 boot-time jitter
        (10, -timedelta(seconds=1), True),
        (10, SAME_START_TOLERANCE, True),
        (10, SAME_START_TOLERANCE + timedelta(milliseconds=1), False),  # PID reused
        (11, timedelta(0), False),
    ],
)
def test_same_process(pid: int, shift: timedelta, same: bool) -> None:
    assert same_process(_process(10, START), _process(pid, START + shift)) is same
    # State records and discovered processes compare alike.
    assert same_process(ProcessRecord(10, START), _process(pid, START + shift)) is same


def test_none_is_no_process() -> None:
    assert not same_process(None, _process(10, START))
    assert not same_process(_process(10, START), None)
    assert not same_process(None, None)
