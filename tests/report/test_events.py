"""What the journal is told, and when: on change, plus one reminder a day while
a target is not OK, never one record per interval. Pure, with an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Set, Tuple

from builders import apiserver_process, loopback_cert, probe_result, target_config

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import TargetFacts, TargetReport
from agent.report.events import (
    MESSAGE_IDS,
    PRIORITY_CRIT,
    PRIORITY_ERR,
    PRIORITY_INFO,
    PRIORITY_WARNING,
    Alerted,
    Event,
    EventKind,
    target_events,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
STARTED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def report(left: Optional[timedelta], now: datetime) -> TargetReport:
    """A probed certificate with `left` remaining at `now`, or a failed probe."""
    cert = None
    if left is not None:
        cert = loopback_cert(
            now + left - timedelta(days=365) + timedelta(hours=1), timedelta(days=365)
        )
    facts = TargetFacts(
        target="kube-apiserver",
        process=apiserver_process(STARTED) if left is None else None,
        discovery_error=None,
        probe=probe_result(cert),
    )
    return TargetReport(
        target=target_config(),
        facts=facts,
        assessment=assess(facts, THRESHOLDS, timedelta(days=365), now),
    )


class Agent:
    """Feeds checks to target_events as the daemon does, keeping its bookkeeping."""

    def __init__(self) -> None:
        self.state: Optional[str] = None
        self.probe_error: Optional[str] = None
        self.alerted = Alerted(None, None)
        self.sent: List[Tuple[datetime, Event]] = []

    def check(self, left: Optional[timedelta], now: datetime) -> List[Event]:
        item = report(left, now)
        events, self.alerted = target_events(item, self.state, self.probe_error, self.alerted, now)
        self.state = item.assessment.state.value
        self.probe_error = item.facts.probe.error if item.facts.probe else None
        self.sent.extend((now, e) for e in events)
        return events


def kinds(events: List[Event]) -> List[EventKind]:
    return [e.kind for e in events]


def test_first_check_says_the_state_once() -> None:
    agent = Agent()
    (first,) = agent.check(timedelta(days=200), T0)
    assert first.kind is EventKind.STATE_CHANGED
    assert first.priority == PRIORITY_INFO
    assert first.message.startswith("kube-apiserver: NONE -> OK: loopback certificate expires")
    assert first.message_id == MESSAGE_IDS[EventKind.STATE_CHANGED]
    assert first.fields["TARGET"] == "kube-apiserver"
    assert first.fields["STATE"] == "ok"
    assert first.fields["PREVIOUS_STATE"] == "none"


def test_no_record_per_interval_and_one_reminder_a_day() -> None:
    agent = Agent()
    agent.check(timedelta(days=30), T0)  # WARNING
    # Every 5 minutes for 3 days: the certificate's time runs out as the clock moves.
    for step in range(1, 3 * 24 * 12 + 1):
        now = T0 + timedelta(minutes=5 * step)
        agent.check(timedelta(days=30) - (now - T0), now)
    reminders = [(at, e) for at, e in agent.sent if e.kind is EventKind.REMINDER]
    changes = [e for _, e in agent.sent if e.kind is EventKind.STATE_CHANGED]
    assert len(changes) == 1  # still WARNING after 3 days
    assert [at - T0 for at, _ in reminders] == [timedelta(days=d) for d in (1, 2, 3)]
    assert all(e.priority == PRIORITY_WARNING for _, e in reminders)
    assert reminders[0][1].message.startswith("kube-apiserver: still WARNING: ")


def test_change_resets_the_reminder_clock_and_carries_priority() -> None:
    agent = Agent()
    agent.check(timedelta(days=20), T0)  # WARNING
    events = agent.check(timedelta(days=13), T0 + timedelta(hours=20))  # CRITICAL
    assert kinds(events) == [EventKind.STATE_CHANGED]
    assert events[0].priority == PRIORITY_CRIT
    assert events[0].message.startswith("kube-apiserver: WARNING -> CRITICAL")
    # Not a reminder 24 h after the first record, but 24 h after the change.
    assert agent.check(timedelta(days=12), T0 + timedelta(hours=30)) == []
    later = agent.check(timedelta(days=11), T0 + timedelta(hours=44))
    assert kinds(later) == [EventKind.REMINDER]


def test_ok_standing_has_no_reminder() -> None:
    agent = Agent()
    agent.check(timedelta(days=300), T0)
    assert agent.check(timedelta(days=290), T0 + timedelta(days=10)) == []


def test_probe_failure_is_said_once_then_recovery_is_a_change() -> None:
    agent = Agent()
    agent.check(timedelta(days=200), T0)
    failed = agent.check(None, T0 + timedelta(minutes=5))
    assert kinds(failed) == [EventKind.PROBE_FAILED, EventKind.STATE_CHANGED]
    assert failed[0].priority == PRIORITY_ERR
    assert failed[0].fields["PROBE_ERROR"] == "probe of 127.0.0.1:6443 failed: connection refused"
    # Still failing: nothing new until the daily reminder.
    assert agent.check(None, T0 + timedelta(minutes=10)) == []
    back = agent.check(timedelta(days=200), T0 + timedelta(minutes=15))
    assert kinds(back) == [EventKind.STATE_CHANGED]
    assert back[0].fields["STATE"] == "ok"


def test_expired_and_unknown_priorities() -> None:
    agent = Agent()
    (expired,) = agent.check(timedelta(days=-1), T0)
    assert expired.priority == PRIORITY_CRIT
    assert expired.fields["STATE"] == "expired"
    assert int(str(expired.fields["CERT_SECONDS_LEFT"])) < 0


def _sent_field_names() -> Set[str]:
    """Every journal field name the agent's code sends: keyword arguments of
    send_event/log_plain/log, and the keys of dicts that are, or extend, a
    record's `fields`."""
    import ast

    names: Set[str] = set()
    root = Path(__file__).resolve().parents[2] / "agent"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("send_event", "log_plain", "log"):
                    names.update(k.arg for k in node.keywords if k.arg and k.arg.isupper())
            targets: List[ast.expr] = []
            value: Optional[ast.expr] = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign):
                targets, value = [node.target], node.value
            for target in targets:
                if (
                    isinstance(target, ast.Name)
                    and target.id == "fields"
                    and isinstance(value, ast.Dict)
                ):
                    names.update(
                        k.value
                        for k in value.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str)
                    )
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "fields"
                    and isinstance(target.slice, ast.Constant)
                ):
                    names.add(target.slice.value)
            if isinstance(node, ast.Dict) and any(
                k is None and isinstance(v, ast.Name) and v.id == "fields"
                for k, v in zip(node.keys, node.values)
            ):
                names.update(
                    k.value
                    for k in node.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)
                )
    return names


def test_every_journal_field_the_code_sends_is_documented() -> None:
    from agent.report.events import JOURNAL_FIELDS
    from agent.report.journal import TRUNCATED_FIELD

    sent = _sent_field_names() - {"MESSAGE_ID"}
    assert {
        "TARGET",
        "STATE",
        "CONFIG_FILE",
        "RESTART_OUTCOME",
        "DRY_RUN",
    } <= sent  # the scan works
    assert sent - set(JOURNAL_FIELDS) == set()
    assert set(JOURNAL_FIELDS) - sent == {TRUNCATED_FIELD}  # set by the journal itself
