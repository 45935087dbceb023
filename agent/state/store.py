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
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from agent.state.atomicfile import write_atomic
from agent.state.records import AgentState

if TYPE_CHECKING:
    pass

STATE_FILE = "state.json"
# A state file is a few KiB; anything far larger is not ours, and reading it
# whole would cost the daemon memory it never gives back.
MAX_STATE_BYTES = 1024 * 1024


def state_path(state_dir: str) -> str:
    """Given the state directory, return the path of the state file."""
    return os.path.join(state_dir, STATE_FILE)


# --- records from a check ----------------------------------------------------


# --- the file ----------------------------------------------------------------


def read_state(state_dir: str) -> AgentState:
    """Given the state directory, return the state stored there, changing nothing.

    For readers such as the `status` verb. Raise FileNotFoundError if there
    is no state file, OSError if it cannot be read, ValueError if it is
    malformed or larger than MAX_STATE_BYTES.
    """
    # Imported here: agent.state_codec imports this module's records.
    from agent.state.codec import decode_state

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
    from agent.state.codec import encode_state

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
