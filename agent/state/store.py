"""What the daemon last saw, kept in `<state_dir>/state.json` across restarts.

The file is small JSON (`"version": 1`), replaced atomically, readable without
root (the `status` verb reads it). A file that cannot be read or decoded is
never fatal: `load_state` moves it aside as evidence and starts fresh, since
everything in it is re-learned by the next successful check.

Every datetime is timezone-aware; times are written as RFC 3339 UTC with the
microseconds kept, because a process is recognised by its exact start time.
This module owns the file; `agent.state.records` the records and
`agent.state.codec` the JSON. Everything in state_dir is opened without
following symlinks, and a state_dir others may write to is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from datetime import datetime
from typing import Callable, Optional, Tuple

from agent.state.atomicfile import write_atomic
from agent.state.codec import decode_state, encode_state, salvage_restarts
from agent.state.records import AgentState
from agent.timefmt import format_rfc3339

STATE_FILE = "state.json"
# A state file is a few KiB; anything far larger is not ours, and reading it
# whole would cost the daemon memory it never gives back.
MAX_STATE_BYTES = 1024 * 1024


def state_path(state_dir: str) -> str:
    """Given the state directory, return the path of the state file."""
    return os.path.join(state_dir, STATE_FILE)


# --- the file ----------------------------------------------------------------


class UnsafeStateDir(PermissionError):
    """The state directory could be changed by someone other than the agent."""


# Evidence of damaged files: enough to compare a few, never a disk filled by a
# crash loop.
MAX_CORRUPT_FILES = 5
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_state_dir(state_dir: str) -> None:
    """Given the state directory, return if only the agent's user (or root) can
    change what is in it; it may also not exist yet.

    Raise UnsafeStateDir naming the directory, its owner and mode if it is
    not a directory, owned by another user, or group/world-writable: whoever
    can write there could plant a symlink or a forged restart history.
    """
    try:
        # Followed: systemd's StateDirectory= may be a symlink into /var/lib/private.
        info = os.stat(state_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnsafeStateDir(
            errno.EPERM, f"refusing state_dir {state_dir}: cannot stat it ({exc.strerror})"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid not in (0, os.geteuid()):
        problem = f"is owned by uid {info.st_uid}, not by uid {os.geteuid()} (this agent) or root"
    elif mode & 0o022:
        problem = f"has mode {mode:04o}: group or others may write to it"
    else:
        return
    raise UnsafeStateDir(
        errno.EPERM, f"refusing state_dir {state_dir}: it {problem} (use chmod 0755 or chown)"
    )


def _read_bytes(path: str) -> bytes:
    """Read at most MAX_STATE_BYTES + 1 bytes of a regular file, never through a symlink."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise OSError(code, os.strerror(code), path)
        chunks = []
        left = MAX_STATE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_state(state_dir: str) -> AgentState:
    """Given the state directory, return the state stored there, changing nothing.

    For readers such as the `status` verb. Raise FileNotFoundError if there
    is no state file, OSError if it cannot be read or is a symlink (ELOOP),
    ValueError if it is malformed or larger than MAX_STATE_BYTES.
    """
    return _decode(_read_bytes(state_path(state_dir)))


def _decode(data: bytes) -> AgentState:
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    return decode_state(data)


def load_state(state_dir: str, now: datetime) -> Tuple[AgentState, Optional[str]]:
    """Given the state directory and now, return the stored state and None; or,
    when there is no state file, an empty state and None; or, when the file
    cannot be read or decoded, the restart records still readable in it (else
    an empty state) and a message saying what was wrong and where the file was
    moved (`state.json.corrupt-<UTC time>`, at most MAX_CORRUPT_FILES kept).
    An unsafe state_dir (check_state_dir) is left untouched: empty state and
    a message.

    Never raises for the file's content or readability.
    """
    path = state_path(state_dir)
    try:
        check_state_dir(state_dir)
    except UnsafeStateDir as exc:
        return AgentState.empty(), f"{exc.strerror}; starting with empty state"
    data = b""
    try:
        data = _read_bytes(path)
        return _decode(data), None
    except FileNotFoundError:
        return AgentState.empty(), None
    except OSError as exc:
        problem = f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        problem = f"corrupt ({exc})"
    kept = salvage_restarts(data[:MAX_STATE_BYTES])
    moved_to, move_error = _move_aside(path, now)
    if moved_to is not None:
        where = f"moved it to {moved_to}"
        _prune_corrupt(path)
    else:
        where = f"could not move it aside ({move_error}), left it in place"
    if kept:
        start = f"starting with the {len(kept)} restart record(s) still readable in it"
    else:
        start = "starting with empty state"
    return AgentState(
        targets={}, restarts=kept
    ), f"state file {path} is {problem}; {where}; {start}"


def _move_aside(path: str, now: datetime) -> Tuple[Optional[str], Optional[str]]:
    """Given a bad state file and now, rename it to a name no earlier bad file
    has; return (the new path, None), or (None, why) if it could not be moved."""
    stamp = format_rfc3339(now).replace("-", "").replace(":", "")
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


def _prune_corrupt(path: str) -> None:
    """Keep the MAX_CORRUPT_FILES newest `<path>.corrupt-*` files; remove the rest."""
    directory, name = os.path.split(path)
    prefix = name + ".corrupt-"
    found = []
    for entry in os.scandir(directory or "."):
        if entry.name.startswith(prefix):
            with contextlib.suppress(OSError):
                found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    for _, old in sorted(found, reverse=True)[MAX_CORRUPT_FILES:]:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, old))


def save_state(state_dir: str, state: AgentState) -> None:
    """Given the state directory and the state, atomically replace the state
    file (mode 0644), creating the directory (0755) if missing.

    Raise OSError if the directory or file cannot be written (UnsafeStateDir
    if others could write to it), ValueError if the state holds a naive datetime.
    """
    data = encode_state(state)
    _ensure_dir(state_dir)
    write_atomic(state_path(state_dir), data, mode=0o644)


# --- sharing the file: the daemon and the `restart` verb both write it -------

LOCK_FILE = ".lock"
RESTART_LOCK_FILE = "restart.lock"


def _ensure_dir(state_dir: str) -> None:
    if not os.path.lexists(state_dir):
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        # The umask (many units set UMask=0077) would hide the state from the
        # non-root status verb; a directory someone else made keeps its mode.
        os.chmod(state_dir, 0o755)
    check_state_dir(state_dir)


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
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
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
