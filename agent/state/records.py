"""What the daemon remembers per target and per restart, as frozen records.

Pure: building records from a check, the learned lifetime, the restart history
rules. `agent.state.codec` turns them into JSON and back; `agent.state.store`
owns the file and its locks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Mapping, Optional, Tuple

from agent.model import BACKDATE, CROSS_CHECK_TOLERANCE, ApiserverProcess, TargetReport

# Enough history to see a restart loop; the file stays a few tens of KiB.
MAX_RESTARTS = 50


# psutil derives a start time from the kernel's boot time, which Linux
# recomputes from the wall clock on every read, so the same process can appear
# to have started a second earlier or later (psutil #2526, #2541). A PID reused
# within seconds of the same start time is not a realistic risk.
SAME_START_TOLERANCE = timedelta(seconds=2)


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


def same_process(a: Optional[ProcessRecord], b: Optional[ProcessRecord]) -> bool:
    """Given two process identities, return whether they are the same process:
    same PID, start times within SAME_START_TOLERANCE. None matches nothing."""
    if a is None or b is None:
        return False
    return a.pid == b.pid and abs(a.started_at - b.started_at) <= SAME_START_TOLERANCE


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
        if abs(cert.not_before - expected) <= CROSS_CHECK_TOLERANCE:
            lifetime, learned_from = cert.lifetime, process
    return TargetState(
        checked_at=checked_at,
        state=a.state.value,
        source=a.source,
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


def add_restart(state: AgentState, record: RestartRecord) -> AgentState:
    """Given the state and a restart record, return the state with it appended,
    keeping the last MAX_RESTARTS records."""
    return replace(state, restarts=(*state.restarts, record)[-MAX_RESTARTS:])


def counts_for_min_interval(record: RestartRecord) -> bool:
    """An intent never finished (a crash mid-restart) counts, as does any
    restart that ran; a restart blocked or aborted before acting does not."""
    return record.phase is RestartPhase.INTENT or record.outcome in (
        RestartResult.SUCCEEDED,
        RestartResult.FAILED,
    )


def last_restart(state: AgentState, target: str) -> Optional[datetime]:
    """Given the state and a target, return when it was last restarted (or an
    intent to restart it was written), for min_interval."""
    times = [r.at for r in state.restarts if r.target == target and counts_for_min_interval(r)]
    return max(times) if times else None


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
    return replace(state, restarts=(*kept, done)[-MAX_RESTARTS:])
