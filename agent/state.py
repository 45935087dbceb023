"""What the daemon last saw, kept in `<state_dir>/state.json` across restarts.

The file is small JSON (`"version": 1`), replaced atomically, readable without
root (the `status` verb reads it). A file that cannot be read or decoded is
never fatal: `load_state` moves it aside as evidence and starts fresh, since
everything in it is re-learned by the next successful check.

Every datetime is timezone-aware; times are written as RFC 3339 UTC with the
microseconds kept, because a process is recognised by its exact start time.
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from agent.assess import BACKDATE, CROSS_CHECK_TOLERANCE, State
from agent.atomicfile import write_atomic
from agent.facts import ApiserverProcess

if TYPE_CHECKING:
    from agent.check import CheckReport, TargetReport

STATE_FILE = "state.json"
STATE_VERSION = 1
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

_STATES = frozenset(s.value for s in State)


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


def learned_lifetimes(
    state: AgentState, processes: Mapping[str, Optional[ProcessRecord]]
) -> Dict[str, timedelta]:
    """Given the state and each target's current process, return the lifetime
    learned for each target whose current process is the one it was learned from."""
    learned: Dict[str, timedelta] = {}
    for name, process in processes.items():
        lifetime = learned_lifetime(state.targets.get(name), process)
        if lifetime is not None:
            learned[name] = lifetime
    return learned


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


def record_check(state: AgentState, report: CheckReport) -> AgentState:
    """Given the state and a check, return the state with every checked target
    updated; targets the check did not cover are kept as they were."""
    targets = dict(state.targets)
    for item in report.targets:
        name = item.target.name
        targets[name] = target_state_from(
            item, state.targets.get(name), checked_at=report.checked_at
        )
    return replace(state, targets=targets)


def add_restart(state: AgentState, record: RestartRecord) -> AgentState:
    """Given the state and a restart record, return the state with it appended,
    keeping the last MAX_RESTARTS records."""
    return replace(state, restarts=(*state.restarts, record)[-MAX_RESTARTS:])


# --- encoding ----------------------------------------------------------------


def _time(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: state times must be timezone-aware")
    utc = moment.astimezone(timezone.utc)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _optional_time(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else _time(moment)


def _process_json(process: Optional[ProcessRecord]) -> Optional[Dict[str, Any]]:
    if process is None:
        return None
    return {"pid": process.pid, "started_at": _time(process.started_at)}


def _target_json(target: TargetState) -> Dict[str, Any]:
    cert = target.cert
    return {
        "checked_at": _time(target.checked_at),
        "state": target.state,
        "source": target.source,
        "summary": target.summary,
        "seconds_left": target.seconds_left,
        "not_after": _optional_time(target.not_after),
        "cert": None
        if cert is None
        else {
            "sha256": cert.sha256,
            "subject": cert.subject,
            "not_before": _time(cert.not_before),
            "not_after": _time(cert.not_after),
        },
        "process": _process_json(target.process),
        "probe_error": target.probe_error,
        "learned_lifetime_seconds": None
        if target.learned_lifetime is None
        else target.learned_lifetime.total_seconds(),
        "learned_from": _process_json(target.learned_from),
        "last_alert_state": target.last_alert_state,
        "last_alert_at": _optional_time(target.last_alert_at),
    }


def _restart_json(record: RestartRecord) -> Dict[str, Any]:
    return {
        "target": record.target,
        "at": _time(record.at),
        "phase": record.phase,
        "outcome": record.outcome,
        "old_not_after": _optional_time(record.old_not_after),
        "new_not_after": _optional_time(record.new_not_after),
        "detail": record.detail,
    }


def encode_state(state: AgentState) -> bytes:
    """Given the state, return it as JSON bytes, keeping the last MAX_RESTARTS restarts.

    Raise ValueError if a datetime is naive or a number is not finite.
    """
    document = {
        "version": STATE_VERSION,
        "targets": {name: _target_json(t) for name, t in state.targets.items()},
        "restarts": [_restart_json(r) for r in state.restarts[-MAX_RESTARTS:]],
    }
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8")


# --- decoding: each reader names the JSON path of what is wrong ---------------

T = TypeVar("T")


class _Object:
    """A JSON object being decoded, with the path it sits at for error messages."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        self.value: Dict[str, Any] = value
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str) -> Any:
        if key not in self.value:
            raise ValueError(f"{self.at(key)}: missing")
        return self.value[key]

    def optional(self, key: str, read: Callable[[Any, str], T]) -> Optional[T]:
        value = self.raw(key)
        return None if value is None else read(value, self.at(key))

    def required(self, key: str, read: Callable[[Any, str], T]) -> T:
        value = self.raw(key)
        if value is None:
            raise ValueError(f"{self.at(key)}: must not be null")
        return read(value, self.at(key))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _number(value: Any, where: str) -> float:
    # bool is an int in Python, but `true` is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    # Python's json reads NaN and Infinity, which encode_state would refuse.
    if not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _pid(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: expected a positive integer PID, got {value!r}")
    return value


def _state(value: Any, where: str) -> str:
    text = _str(value, where)
    if text not in _STATES:
        raise ValueError(f"{where}: expected one of {', '.join(sorted(_STATES))}, got {text!r}")
    return text


def _datetime(value: Any, where: str) -> datetime:
    text = _str(value, where)
    for layout in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(
        f"{where}: expected an RFC 3339 UTC time like 2026-01-09T08:58:13Z, got {text!r}"
    )


def _lifetime(value: Any, where: str) -> timedelta:
    seconds = _number(value, where)
    if not 0 < seconds < 1e10:
        raise ValueError(f"{where}: expected a positive number of seconds, got {value!r}")
    return timedelta(seconds=seconds)


def _process(value: Any, where: str) -> ProcessRecord:
    obj = _Object(value, where)
    return ProcessRecord(
        pid=obj.required("pid", _pid), started_at=obj.required("started_at", _datetime)
    )


def _cert(value: Any, where: str) -> CertRecord:
    obj = _Object(value, where)
    return CertRecord(
        sha256=obj.required("sha256", _str),
        subject=obj.required("subject", _str),
        not_before=obj.required("not_before", _datetime),
        not_after=obj.required("not_after", _datetime),
    )


def _target(value: Any, where: str) -> TargetState:
    obj = _Object(value, where)
    learned_lifetime = obj.optional("learned_lifetime_seconds", _lifetime)
    learned_from = obj.optional("learned_from", _process)
    return TargetState(
        checked_at=obj.required("checked_at", _datetime),
        state=obj.required("state", _state),
        source=obj.required("source", _str),
        summary=obj.required("summary", _str),
        seconds_left=obj.optional("seconds_left", _number),
        not_after=obj.optional("not_after", _datetime),
        cert=obj.optional("cert", _cert),
        process=obj.optional("process", _process),
        probe_error=obj.optional("probe_error", _str),
        learned_lifetime=learned_lifetime,
        learned_from=learned_from,
        last_alert_state=obj.optional("last_alert_state", _state),
        last_alert_at=obj.optional("last_alert_at", _datetime),
    )


def _restart(value: Any, where: str) -> RestartRecord:
    obj = _Object(value, where)
    return RestartRecord(
        target=obj.required("target", _str),
        at=obj.required("at", _datetime),
        phase=obj.required("phase", _str),
        outcome=obj.optional("outcome", _str),
        old_not_after=obj.optional("old_not_after", _datetime),
        new_not_after=obj.optional("new_not_after", _datetime),
        detail=obj.required("detail", _str),
    )


def decode_state(data: bytes) -> AgentState:
    """Given the bytes of a state file, return the state.

    Raise ValueError naming what is wrong if they are not UTF-8 JSON, the
    version is not 1, or a key is missing or of the wrong type.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    top = _Object(document, "")
    version = top.raw("version")
    if type(version) is not int or version != STATE_VERSION:
        raise ValueError(
            f"version: unsupported state version {version!r} (this agent reads {STATE_VERSION})"
        )
    targets_obj = _Object(top.raw("targets"), "targets")
    targets = {
        name: _target(value, targets_obj.at(name)) for name, value in targets_obj.value.items()
    }
    restarts_raw = top.raw("restarts")
    if not isinstance(restarts_raw, list):
        raise ValueError(f"restarts: expected an array, got {_kind(restarts_raw)}")
    restarts: List[RestartRecord] = [
        _restart(value, f"restarts[{i}]") for i, value in enumerate(restarts_raw)
    ]
    return AgentState(targets=targets, restarts=tuple(restarts[-MAX_RESTARTS:]))


# --- the file ----------------------------------------------------------------


def read_state(state_dir: str) -> AgentState:
    """Given the state directory, return the state stored there, changing nothing.

    For readers such as the `status` verb. Raise FileNotFoundError if there
    is no state file, OSError if it cannot be read, ValueError if it is
    malformed or larger than MAX_STATE_BYTES.
    """
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
