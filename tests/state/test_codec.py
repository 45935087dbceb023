"""The state codec at its edges: years below 1000, and a damaged file still
gives its restart records. Over the whole value space (every state reads back
exactly; any document is a state or a ValueError):
tests/fuzz/test_fuzz_state_values.py and test_fuzz_state.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from agent.state.codec import decode_state, encode_state, salvage_restarts
from agent.state.records import (
    AgentState,
    RestartPhase,
    RestartRecord,
    RestartResult,
)

UTC = timezone.utc


def test_years_below_1000_read_back() -> None:
    # strftime("%Y") writes year 999 as "999" on glibc, which the reader refused.
    early = datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = RestartRecord("t", early, RestartPhase.INTENT, None, early, None, "x")
    state = AgentState(targets={}, restarts=(record,))
    assert b'"0999-01-02T03:04:05Z"' in encode_state(state)
    assert decode_state(encode_state(state)) == state


def _restart(minute: int, target: str = "kube-apiserver") -> RestartRecord:
    at = datetime(2026, 11, 29, 2, minute, tzinfo=UTC)
    return RestartRecord(
        target, at, RestartPhase.DONE, RestartResult.SUCCEEDED, at, at + timedelta(days=365), "due"
    )


def test_restart_records_are_salvaged_from_a_truncated_file() -> None:
    state = AgentState(targets={}, restarts=(_restart(1), _restart(2, "other")))
    data = encode_state(state)
    broken = data[: data.index(b'"other"') + 3]  # cut inside the second record
    assert salvage_restarts(broken) == (_restart(1),)
    assert salvage_restarts(data) == state.restarts
    assert salvage_restarts(b"\xff{not json}") == ()
