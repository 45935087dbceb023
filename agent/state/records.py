"""What the daemon remembers per target and per restart, as frozen records.

Pure: building records from a check, the learned lifetime, the restart history
rules. `agent.state.codec` turns them into JSON and back; `agent.state.store`
owns the file and its locks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Mapping, Optional, Sequence, Set, Tuple

from agent.model import (
    BACKDATE,
    CROSS_CHECK_TOLERANCE,
    MAX_LIFETIME,
    ApiserverProcess,
    TargetReport,
    same_process,
)

# Enough history to see a restart loop; the file stays a few tens of KiB. The
# records min_interval needs are kept beyond it (see trim_restarts).
MAX_RESTARTS = 50


@dataclass(frozen=True)
class CertRecord:
    sha256: str
    subject: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started_at: datetime


@dataclass(frozen=True)
class TargetState:
    checked_at: datetime
    state: str
    source: str
    summary: str
    seconds_left: Optional[float]
    not_after: Optional[datetime]
    cert: Optional[CertRecord]
    process: Optional[ProcessRecord]
    probe_error: Optional[str]
    # not_after − not_before of the last successfully probed certificate, and
    # the process that served it: `lifetime = "auto"` trusts it for that process only.
    learned_lifetime: Optional[timedelta]
    learned_from: Optional[ProcessRecord]
    # For the daemon's reminders; only the daemon changes them.
    last_alert_state: Optional[str]
    last_alert_at: Optional[datetime]


class RestartPhase(str, Enum):
    """A restart record is written as an intent before anything is touched,
    then again, done, with the outcome."""

    INTENT = "intent"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


class RestartResult(str, Enum):
    """How a restart ended: the method ran (succeeded, failed), or it did not
    (blocked by a guard, aborted before the method)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RestartRecord:
    target: str
    at: datetime
    phase: RestartPhase
    outcome: Optional[RestartResult]
    old_not_after: Optional[datetime]
    new_not_after: Optional[datetime]
    detail: str

    def __post_init__(self) -> None:
        # The words are the enums' values: a record spelled with them (as the
        # state file does) is the same record.
        object.__setattr__(self, "phase", RestartPhase(self.phase))
        if self.outcome is not None:
            object.__setattr__(self, "outcome", RestartResult(self.outcome))


@dataclass(frozen=True)
class AgentState:
    targets: Mapping[str, TargetState]
    restarts: Tuple[RestartRecord, ...]  # oldest first

    @classmethod
    def empty(cls) -> AgentState:
        return cls(targets={}, restarts=())


def process_record(process: Optional[ApiserverProcess]) -> Optional[ProcessRecord]:
    """Given a discovered process (or None), return its identity (or None)."""
    if process is None:
        return None
    return ProcessRecord(pid=process.pid, started_at=process.started_at)


def learned_lifetime(
    target: Optional[TargetState], process: Optional[ProcessRecord]
) -> Optional[timedelta]:
    """Given a target's saved state and its current process, return the lifetime
    learned from that same process, or None."""
    if target is None or target.learned_lifetime is None:
        return None
    return target.learned_lifetime if same_process(target.learned_from, process) else None


def target_state_from(
    report: TargetReport, previous: Optional[TargetState], *, checked_at: datetime
) -> TargetState:
    """Given one target's check, its previous state and when the check ran,
    return its new state.

    The learned lifetime is replaced only by a certificate that belongs to the
    discovered process (its not_before is the start − 1 h); otherwise it, and
    the alert bookkeeping, carry over.
    """
    facts, a = report.facts, report.assessment
    probe = facts.probe
    cert = probe.cert if probe is not None else None
    process = process_record(facts.process)
    lifetime = previous.learned_lifetime if previous is not None else None
    learned_from = previous.learned_from if previous is not None else None
    if cert is not None and facts.process is not None:
        expected = facts.process.started_at - BACKDATE
        # A certificate that is not this process's (the probe reached another
        # apiserver) says nothing about this process's lifetime.
        # A lifetime outside (0, MAX_LIFETIME] is no apiserver's: it would only
        # mislead the estimate, and the state file refuses it.
        if abs(cert.not_before - expected) <= CROSS_CHECK_TOLERANCE and plausible_lifetime(
            cert.lifetime
        ):
            lifetime, learned_from = cert.lifetime, process
    return TargetState(
        checked_at=checked_at,
        state=a.state.value,
        source=a.source.value,
        summary=a.summary,
        seconds_left=a.seconds_left,
        not_after=a.not_after,
        cert=None
        if cert is None
        else CertRecord(
            sha256=cert.sha256,
            subject=cert.subject,
            not_before=cert.not_before,
            not_after=cert.not_after,
        ),
        process=process,
        probe_error=probe.error if probe is not None else None,
        learned_lifetime=lifetime,
        learned_from=learned_from,
        last_alert_state=previous.last_alert_state if previous is not None else None,
        last_alert_at=previous.last_alert_at if previous is not None else None,
    )


def plausible_lifetime(lifetime: timedelta) -> bool:
    """Given a certificate lifetime, return whether it may be learned and stored."""
    return timedelta(0) < lifetime <= MAX_LIFETIME


def trim_restarts(records: Sequence[RestartRecord]) -> Tuple[RestartRecord, ...]:
    """Given restart records (oldest first), return the last MAX_RESTARTS plus,
    for every target, its latest counted restart and its latest open intent,
    in their original order.

    Blocked and aborted attempts of one target must never push out what
    min_interval needs to know about another.
    """
    if len(records) <= MAX_RESTARTS:
        return tuple(records)
    keep = set(range(len(records) - MAX_RESTARTS, len(records)))
    seen_counted: Set[str] = set()
    seen_intent: Set[str] = set()
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        if counts_for_min_interval(record) and record.target not in seen_counted:
            seen_counted.add(record.target)
            keep.add(index)
        if record.phase is RestartPhase.INTENT and record.target not in seen_intent:
            seen_intent.add(record.target)
            keep.add(index)
    return tuple(records[i] for i in sorted(keep))


def add_restart(state: AgentState, record: RestartRecord) -> AgentState:
    """Given the state and a restart record, return the state with it appended,
    trimmed by trim_restarts."""
    return replace(state, restarts=trim_restarts((*state.restarts, record)))


def counts_for_min_interval(record: RestartRecord) -> bool:
    """An intent never finished (a crash mid-restart) counts, as does any
    restart that ran; a restart blocked or aborted before acting does not."""
    return record.phase is RestartPhase.INTENT or record.outcome in (
        RestartResult.SUCCEEDED,
        RestartResult.FAILED,
    )


def last_restart(
    state: AgentState, target: str, now: Optional[datetime] = None
) -> Optional[datetime]:
    """Given the state, a target and (optionally) now, return when it was last
    restarted (or an intent to restart it was written), for min_interval.

    With now, a time more than CLOCK_STEP_TOLERANCE ahead of it counts as now:
    it was written before the clock stepped back, and must not hold restarts
    for as long as the step.
    """
    times = [r.at for r in state.restarts if r.target == target and counts_for_min_interval(r)]
    if not times:
        return None
    latest = max(times)
    if now is not None and latest - now > CLOCK_STEP_TOLERANCE:
        return now
    return latest


# A time further ahead than this was written before the clock stepped back
# (NTP's first sync on a board without RTC, a VM restored from a snapshot).
CLOCK_STEP_TOLERANCE = timedelta(minutes=5)


def settle_future(state: AgentState, now: datetime) -> Tuple[AgentState, Tuple[str, ...]]:
    """Given the state and now, return it with every restart time and last
    journal alert more than CLOCK_STEP_TOLERANCE ahead of now moved to now,
    and one message per time moved (so each is said once: saved, it is no
    longer ahead).
    """
    notes = []

    def settled(moment: datetime, what: str) -> datetime:
        if moment - now <= CLOCK_STEP_TOLERANCE:
            return moment
        ahead = int((moment - now).total_seconds())
        notes.append(
            f"{what} is dated {ahead} s ahead of the clock (did the clock step back?); "
            "counting it as now"
        )
        return now

    restarts = tuple(
        replace(r, at=settled(r.at, f"{r.target}: restart record ({r.phase})"))
        for r in state.restarts
    )
    targets = {
        name: replace(t, last_alert_at=settled(t.last_alert_at, f"{name}: last journal alert"))
        if t.last_alert_at is not None
        else t
        for name, t in state.targets.items()
    }
    if not notes:
        return state, ()
    return AgentState(targets=targets, restarts=restarts), tuple(notes)


def unverified_restart(state: AgentState) -> Optional[RestartRecord]:
    """Given the state, return the last restart that ran (or may have: an
    intent never finished) when it was not verified, else None."""
    ran = [r for r in state.restarts if counts_for_min_interval(r)]
    if not ran or ran[-1].outcome is RestartResult.SUCCEEDED:
        return None
    return ran[-1]


def finish_restart(state: AgentState, intent: RestartRecord, done: RestartRecord) -> AgentState:
    """Given the state, the intent record and the finished record, return the
    state with the intent replaced by the finished one (appended if gone)."""
    kept = tuple(r for r in state.restarts if r != intent)
    return replace(state, restarts=trim_restarts((*kept, done)))
