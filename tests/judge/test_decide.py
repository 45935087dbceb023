"""The restart decision is pure: assessment, policy, last restart, node, now in."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest
from fuzz.fuzzing import inputs
from hypothesis import given
from hypothesis import strategies as st

from agent.config.loader import default_config
from agent.judge.decide import (
    GuardResults,
    Reason,
    RestartDecision,
    apply_guards,
    decide,
    node_delay,
)
from agent.judge.window import contains, parse_window
from agent.model import Assessment, Source, State

# Saturday 2026-12-05 03:00 Europe/Berlin = 02:00 UTC, inside Sat 02:00-04:00.
INSIDE = datetime(2026, 12, 5, 2, 0, tzinfo=timezone.utc)
# Friday 2026-12-04 12:00 UTC, outside.
OUTSIDE = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
WINDOW = parse_window(["sat", "sun"], "02:00", "04:00", "Europe/Berlin")
POLICY = replace(
    default_config().restart, enabled=True, windows=(WINDOW,), before_expiry=timedelta(days=30)
)


def assessment(
    left: Optional[timedelta], now: datetime, state: Optional[State] = None, source: str = "probe"
) -> Assessment:
    not_after = None if left is None else now + left
    if state is None:
        if left is None:
            state = State.UNKNOWN
        elif left <= timedelta(0):
            state = State.EXPIRED
        elif left < timedelta(days=14):
            state = State.CRITICAL
        else:
            state = State.WARNING
    return Assessment(
        target="kube-apiserver",
        state=state,
        source=Source(source) if left is not None else Source.NONE,
        not_before=None if not_after is None else not_after - timedelta(days=365),
        not_after=not_after,
        seconds_left=None if left is None else left.total_seconds(),
        lifetime=timedelta(days=365),
        summary="…",
        notes=(),
        error=None,
    )


def run(
    left: Optional[timedelta],
    now: datetime,
    last: Optional[datetime] = None,
    policy=POLICY,  # type: ignore[no-untyped-def]
    **kwargs: object,
) -> RestartDecision:
    return decide(assessment(left, now, **kwargs), policy, last, "master-1", now)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "expected", "restart", "message"),
    [
        (
            lambda: run(timedelta(days=5), INSIDE, policy=replace(POLICY, enabled=False)),
            Reason.DISABLED,
            False,
            "restart disabled",
        ),
        (
            lambda: run(timedelta(days=5), INSIDE, policy=replace(POLICY, targets=("other",))),
            Reason.DISABLED,
            False,
            "restart disabled",
        ),
        (lambda: run(None, INSIDE), Reason.UNKNOWN_EXPIRY, False, "no restart: the served"),
        (
            lambda: run(timedelta(days=5), INSIDE, source="process-start"),
            Reason.UNKNOWN_EXPIRY,
            False,
            "no restart",
        ),
        (
            lambda: run(timedelta(days=40), INSIDE),
            Reason.NOT_DUE,
            False,
            "restart not due before 2026-12-15 02:00 UTC",
        ),
        (
            lambda: run(timedelta(days=5), INSIDE, last=INSIDE - timedelta(hours=23)),
            Reason.TOO_SOON,
            False,
            "restart held: last restart 2026-12-04 03:00 UTC, min_interval until 2026-12-05 03:00",
        ),
        (
            lambda: run(timedelta(days=-1), OUTSIDE),
            Reason.EXPIRED,
            True,
            "restarting now: certificate expired",
        ),
        (
            lambda: run(timedelta(days=-1), OUTSIDE, policy=replace(POLICY, when_expired="window")),
            Reason.OUTSIDE_WINDOW,
            False,
            "restart planned Sat 02:00 Europe/Berlin",
        ),
        (
            lambda: run(timedelta(days=5), OUTSIDE),
            Reason.OUTSIDE_WINDOW,
            False,
            "restart planned Sat 02:00 Europe/Berlin",
        ),
        (
            lambda: run(timedelta(days=5), OUTSIDE, policy=replace(POLICY, windows=())),
            Reason.OUTSIDE_WINDOW,
            False,
            "restart due, but no maintenance window is configured",
        ),
        (
            lambda: run(timedelta(days=5), INSIDE, last=INSIDE - timedelta(hours=25)),
            Reason.DUE,
            True,
            "restarting now: due and inside the window",
        ),
        (lambda: run(timedelta(days=29), INSIDE), Reason.DUE, True, "restarting now"),
    ],
)
def test_every_reason_code(case: object, expected: Reason, restart: bool, message: str) -> None:
    decision = case()  # type: ignore[operator]
    assert decision.reason is expected
    assert decision.restart is restart
    assert decision.message.startswith(message), decision.message


def test_too_soon_wins_over_expired() -> None:
    decision = run(timedelta(days=-1), OUTSIDE, last=OUTSIDE - timedelta(hours=1))
    assert decision.reason is Reason.TOO_SOON


def test_status_text() -> None:
    assert run(timedelta(days=40), INSIDE).status == ""
    assert run(timedelta(days=5), OUTSIDE).status == "restart planned Sat 02:00 Europe/Berlin"


def test_next_opening_is_reported() -> None:
    decision = run(timedelta(days=5), OUTSIDE)
    assert decision.next_opening is not None
    assert decision.next_opening.start == datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)
    assert decision.next_opening.end == datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)


def test_random_delay_shifts_the_opening_per_node() -> None:
    policy = replace(POLICY, random_delay=timedelta(minutes=50))
    start = datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)
    delays = {node_delay(f"master-{i}", start, policy.random_delay) for i in range(1, 6)}
    assert len(delays) > 1  # the masters are spread
    assert all(timedelta(0) <= d < timedelta(minutes=50) for d in delays)
    assert node_delay("master-1", start, policy.random_delay) == node_delay(
        "master-1", start, policy.random_delay
    )
    delay = node_delay("master-1", start, policy.random_delay)
    before = decide(assessment(timedelta(days=5), start), policy, None, "master-1", start)
    if delay > timedelta(0):
        assert before.reason is Reason.OUTSIDE_WINDOW
    after = start + delay
    assert decide(assessment(timedelta(days=5), after), policy, None, "master-1", after).restart


def test_random_delay_is_at_most_half_the_window() -> None:
    policy = replace(POLICY, random_delay=timedelta(days=30))
    start = datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)
    decision = decide(assessment(timedelta(days=5), start), policy, None, "m", start)
    assert decision.next_opening is not None
    assert decision.next_opening.start - start <= timedelta(hours=1)


@pytest.mark.parametrize(
    ("guards", "reason", "message"),
    [
        (GuardResults(), Reason.DUE, "restarting now"),
        (
            GuardResults(peer_problem="peer https://10.0.0.12:6443 not ready: 500"),
            Reason.BLOCKED_PEER,
            "restart blocked: peer https://10.0.0.12:6443 not ready: 500",
        ),
        (
            GuardResults(command_problem="blocking command said no: exit 1"),
            Reason.BLOCKED_COMMAND,
            "restart blocked: blocking command said no: exit 1",
        ),
        (
            GuardResults(lease_holder="master-2"),
            Reason.LEASE_HELD,
            "restart blocked: lease held by master-2",
        ),
        (
            GuardResults(peer_problem="p", command_problem="c", lease_holder="m"),
            Reason.BLOCKED_PEER,
            "restart blocked: p",
        ),
    ],
)
def test_guards(guards: GuardResults, reason: Reason, message: str) -> None:
    decision = apply_guards(run(timedelta(days=5), INSIDE), guards)
    assert decision.reason is reason
    assert decision.restart is (reason is Reason.DUE)
    assert decision.message.startswith(message)


def test_guards_never_turn_a_no_into_a_yes() -> None:
    decision = run(timedelta(days=5), OUTSIDE)
    assert apply_guards(decision, GuardResults(lease_holder="x")) == decision


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@inputs(300, quick=30)
@given(
    days=st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
    start=st.integers(0, 23 * 60 + 59),
    length=st.integers(1, 24 * 60),
    zone=st.sampled_from(ZONES),
    minutes=st.integers(0, 60 * 24 * 400),
    left_days=st.integers(-30, 400),
    last_hours=st.one_of(st.none(), st.integers(0, 24 * 30)),
    when_expired=st.sampled_from(["immediately", "window"]),
)
def test_properties(
    days: list[str],
    start: int,
    length: int,
    zone: str,
    minutes: int,
    left_days: int,
    last_hours: Optional[int],
    when_expired: str,
) -> None:
    end = (start + length) % (24 * 60)
    # A window of 24 hours is written 00:00–24:00; others of that length are refused.
    if end == start:
        start, end_text = 0, "24:00"
    else:
        end_text = f"{end // 60:02d}:{end % 60:02d}"
    window = parse_window(days, f"{start // 60:02d}:{start % 60:02d}", end_text, zone)
    policy = replace(POLICY, windows=(window,), when_expired=when_expired)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    last = None if last_hours is None else now - timedelta(hours=last_hours)
    a = assessment(timedelta(days=left_days), now)
    decision = decide(a, policy, last, "master-1", now)
    if decision.restart:
        # Never outside a window unless expired (and so configured).
        assert contains(window, now) or (a.state is State.EXPIRED and when_expired == "immediately")
        # Never twice within min_interval.
        assert last is None or now - last >= policy.min_interval
        # Never before it is due.
        assert a.seconds_left is not None
        assert a.seconds_left <= policy.before_expiry.total_seconds()  # due at exactly that
