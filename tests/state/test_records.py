"""Restart history rules (agent.state.records): what min_interval needs is
never trimmed away by another target's records (issue 9.2)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from agent.state.codec import decode_state, encode_state
from agent.state.records import (
    CLOCK_STEP_TOLERANCE,
    MAX_RESTARTS,
    AgentState,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
    add_restart,
    finish_restart,
    last_restart,
    settle_future,
)

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)


def record(
    target: str, minute: int, phase: str = "done", outcome: Optional[str] = "blocked"
) -> RestartRecord:
    return RestartRecord(
        target,
        T0 + timedelta(minutes=minute),
        RestartPhase(phase),
        None if outcome is None else RestartResult(outcome),
        None,
        None,
        "detail",
    )


def test_blocked_records_of_one_target_keep_anothers_counted_restart() -> None:
    counted = record("a", 0, outcome="failed")
    state = add_restart(AgentState.empty(), counted)
    for minute in range(1, 3 * MAX_RESTARTS):
        state = add_restart(state, record("b", minute))
    assert last_restart(state, "a") == counted.at
    assert counted in decode_state(encode_state(state)).restarts
    assert len(state.restarts) == MAX_RESTARTS + 1


def test_an_open_intent_survives_trimming_and_finishing_others() -> None:
    intent = record("a", 0, phase="intent", outcome=None)
    state = add_restart(AgentState.empty(), intent)
    for minute in range(1, 2 * MAX_RESTARTS):
        state = add_restart(state, record("b", minute))
    other = record("b", 500, phase="intent", outcome=None)
    state = finish_restart(add_restart(state, other), other, record("b", 501, outcome="succeeded"))
    assert intent in state.restarts
    assert last_restart(state, "a") == intent.at
    assert last_restart(state, "b") == T0 + timedelta(minutes=501)


def test_history_stays_bounded() -> None:
    state = AgentState.empty()
    for minute in range(10 * MAX_RESTARTS):
        state = add_restart(state, record(f"t{minute % 3}", minute, outcome="succeeded"))
    assert len(state.restarts) == MAX_RESTARTS
    assert state.restarts[-1].at == T0 + timedelta(minutes=10 * MAX_RESTARTS - 1)


# --- a backward clock step (issue 9.6) -------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def test_a_restart_dated_after_now_counts_as_now() -> None:
    ahead = RestartRecord(
        "a", NOW + timedelta(days=365), RestartPhase.DONE, RestartResult.SUCCEEDED, None, None, ""
    )
    state = AgentState(targets={}, restarts=(ahead,))
    assert last_restart(state, "a", NOW) == NOW
    # A few minutes ahead is clock noise between two nodes' writers, kept as is.
    near = replace(ahead, at=NOW + CLOCK_STEP_TOLERANCE)
    assert last_restart(AgentState(targets={}, restarts=(near,)), "a", NOW) == near.at


def test_settle_future_moves_restarts_and_alerts_once() -> None:
    ahead = RestartRecord(
        "a", NOW + timedelta(days=365), RestartPhase.INTENT, None, None, None, "due"
    )
    target = TargetState(
        checked_at=NOW,
        state="warning",
        source="probe",
        summary="s",
        seconds_left=1.0,
        not_after=None,
        cert=None,
        process=None,
        probe_error=None,
        learned_lifetime=None,
        learned_from=None,
        last_alert_state="warning",
        last_alert_at=NOW + timedelta(days=2),
    )
    state = AgentState(targets={"a": target}, restarts=(ahead, record("b", 0)))
    settled, notes = settle_future(state, NOW)
    assert settled.restarts == (replace(ahead, at=NOW), record("b", 0))
    assert settled.targets["a"].last_alert_at == NOW
    assert len(notes) == 2
    assert notes[0].startswith("a: restart record (intent) is dated 31536000 s ahead of the clock")
    assert settle_future(settled, NOW) == (settled, ())
