"""What the daemon last saw, kept in `<state_dir>/state.json` across restarts.

The file is small JSON (`"version": 1`), replaced atomically, readable without
root (the `status` verb reads it). A file that cannot be read or decoded is
never fatal: `load_state` moves it aside as evidence and starts fresh, since
everything in it is re-learned by the next successful check.

Every datetime is timezone-aware; times are written as RFC 3339 UTC with the
microseconds kept, because a process is recognised by its exact start time.
This module owns the records and the file; `agent.state_codec` owns the JSON.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Tuple

from agent.assess import BACKDATE, CROSS_CHECK_TOLERANCE
from agent.atomicfile import write_atomic
from agent.facts import ApiserverProcess

if TYPE_CHECKING:
    from agent.check import TargetReport

STATE_FILE = "state.json"
# Enough history to see a restart loop; the file stays a few tens of KiB.
MAX_RESTARTS = 50
# A state file is a few KiB; anything far larger is not ours, and reading it
# whole would cost the daemon memory it never gives back.
MAX_STATE_BYTES = 1024 * 1024
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


@dataclass(frozen=True)
class RestartRecord:
    target: str
    at: datetime
    phase: str  # written as intent before acting, then again with the outcome
    outcome: Optional[str]
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


def state_path(state_dir: str) -> str:
    """Given the state directory, return the path of the state file."""
    return os.path.join(state_dir, STATE_FILE)


# --- records from a check ----------------------------------------------------


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


# --- the file ----------------------------------------------------------------


def read_state(state_dir: str) -> AgentState:
    """Given the state directory, return the state stored there, changing nothing.

    For readers such as the `status` verb. Raise FileNotFoundError if there
    is no state file, OSError if it cannot be read, ValueError if it is
    malformed or larger than MAX_STATE_BYTES.
    """
    # Imported here: agent.state_codec imports this module's records.
    from agent.state_codec import decode_state

    with open(state_path(state_dir), "rb") as handle:
        data = handle.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    return decode_state(data)


def load_state(state_dir: str, now: datetime) -> Tuple[AgentState, Optional[str]]:
    """Given the state directory and now, return the stored state and None; or,
    when there is no state file, an empty state and None; or, when the file
    cannot be read or decoded, an empty state and a message saying what was
    wrong and where the file was moved (`state.json.corrupt-<UTC time>`).

    Never raises for the file's content or readability.
    """
    path = state_path(state_dir)
    try:
        return read_state(state_dir), None
    except FileNotFoundError:
        return AgentState.empty(), None
    except OSError as exc:
        problem = f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        problem = f"corrupt ({exc})"
    moved_to, move_error = _move_aside(path, now)
    if moved_to is not None:
        where = f"moved it to {moved_to}"
    else:
        where = f"could not move it aside ({move_error}), left it in place"
    return AgentState.empty(), f"state file {path} is {problem}; {where}; starting with empty state"


def _move_aside(path: str, now: datetime) -> Tuple[Optional[str], Optional[str]]:
    """Given a bad state file and now, rename it to a name no earlier bad file
    has; return (the new path, None), or (None, why) if it could not be moved."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{path}.corrupt-{stamp}"
    # A daemon restarted by systemd within the same second must not overwrite
    # the evidence kept by the previous attempt.
    for attempt in range(10):
        candidate = base if attempt == 0 else f"{base}.{attempt}"
        if os.path.lexists(candidate):
            continue
        try:
            os.rename(path, candidate)
        except OSError as exc:
            return None, exc.strerror or str(exc)
        return candidate, None
    return None, os.strerror(errno.EEXIST) + f": {base} and 9 more"


def save_state(state_dir: str, state: AgentState) -> None:
    """Given the state directory and the state, atomically replace the state
    file (mode 0644), creating the directory (0755) if missing.

    Raise OSError if the directory or file cannot be written, ValueError if
    the state holds a naive datetime.
    """
    # Imported here: agent.state_codec imports this module's records.
    from agent.state_codec import encode_state

    data = encode_state(state)
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        # The umask (many units set UMask=0077) would hide the state from the
        # non-root status verb; a directory someone else made keeps its mode.
        os.chmod(state_dir, 0o755)
    write_atomic(state_path(state_dir), data, mode=0o644)


# --- sharing the file: the daemon and the `restart` verb both write it -------

LOCK_FILE = ".lock"
RESTART_LOCK_FILE = "restart.lock"


def _ensure_dir(state_dir: str) -> None:
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        os.chmod(state_dir, 0o755)


def update_state(
    state_dir: str, change: Callable[[AgentState], AgentState], now: datetime
) -> Tuple[AgentState, Optional[str]]:
    """Given the state directory, a change and now, apply the change to the
    state ON DISK under an exclusive lock and save it; return the new state and
    load_state's message, if any.

    The daemon owns `targets`, whoever restarts owns `restarts`: reading and
    writing under one lock means neither loses the other's records. Raise
    OSError if the directory, lock or file cannot be written.
    """
    import fcntl

    _ensure_dir(state_dir)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current, message = load_state(state_dir, now)
        changed = change(current)
        save_state(state_dir, changed)
        return changed, message
    finally:
        os.close(fd)  # releases the lock


class RestartLock:
    """An exclusive, non-blocking lock on <state_dir>/restart.lock: one restart
    at a time on this node, whether the daemon or a person runs it. The kernel
    drops it when the holder dies, so it can never stick."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, RESTART_LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        import fcntl

        _ensure_dir(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def counts_for_min_interval(record: RestartRecord) -> bool:
    """An intent never finished (a crash mid-restart) counts, as does any
    restart that ran; a restart blocked or aborted before acting does not."""
    return record.phase == "intent" or record.outcome in ("succeeded", "failed")


def last_restart(state: AgentState, target: str) -> Optional[datetime]:
    """Given the state and a target, return when it was last restarted (or an
    intent to restart it was written), for min_interval."""
    times = [r.at for r in state.restarts if r.target == target and counts_for_min_interval(r)]
    return max(times) if times else None


def finish_restart(state: AgentState, intent: RestartRecord, done: RestartRecord) -> AgentState:
    """Given the state, the intent record and the finished record, return the
    state with the intent replaced by the finished one (appended if gone)."""
    kept = tuple(r for r in state.restarts if r != intent)
    return replace(state, restarts=(*kept, done)[-MAX_RESTARTS:])
