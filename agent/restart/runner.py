"""Run an external command the one way the agent does.

Hooks, the restart command, systemctl and crictl all run through
`run_command`: argv only (no shell), stdin /dev/null, only the tail of its
output kept, our systemd notification variables removed from its environment,
and a session of its own, so that on timeout its whole process group is
killed. The result is a HookResult with a line for the journal.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Dict, Mapping, Optional, Sequence

__all__ = ["OUTPUT_TAIL", "HookResult", "run_command", "run_hook"]

# Ours alone: with NOTIFY_SOCKET a child could send READY=1 or STOPPING=1 for
# our unit or feed our watchdog; with LISTEN_* it would take our sockets.
_SYSTEMD_PRIVATE = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)

# Enough for the last lines of an error, small enough for a journal field.
OUTPUT_TAIL = 2048
# After the command exits, what is still in the pipe is read, up to this much
# (a grandchild may keep writing into it).
_DRAIN_LIMIT = 1024 * 1024
# A command past its timeout gets SIGTERM, then SIGKILL this much later.
_KILL_GRACE = 2.0
# How often the runner looks at whether the command has exited.
_TICK = 0.05
_DISPLAY_WIDTH = 120


@dataclass(frozen=True)
class HookResult:
    """How a command went: ok (exit 0), its exit status, a journal line, and
    the last OUTPUT_TAIL bytes of its output (stdout and stderr together).

    returncode is None when it did not run, or was killed at its timeout; a
    negative returncode is the signal that ended it.
    """

    ok: bool
    returncode: Optional[int]
    detail: str
    output: str = ""


def run_hook(argv: Sequence[str], env_extra: Mapping[str, str], timeout: float) -> HookResult:
    """Given an argv (run without a shell), variables to add to its environment
    and a timeout in seconds, run it and return how it went.

    An empty argv is ok without running anything. A program that is missing or
    not executable is a failed result, not an exception. On timeout the
    command's process group gets SIGTERM, then SIGKILL after 2 s. Processes it
    leaves behind after exiting on its own keep running (a restart script may
    start the apiserver in the background), but their later output is not read.
    """
    if not argv:
        return HookResult(True, None, "no command to run")
    return run_command(argv, env_extra, timeout, f"command {_display(argv)}")


def run_command(
    argv: Sequence[str],
    env_extra: Mapping[str, str],
    timeout: float,
    label: str,
    *,
    keep: int = OUTPUT_TAIL,
    separate_stderr: bool = False,
) -> HookResult:
    """Given an argv, extra environment, a timeout, a label for the journal
    line, how many bytes of stdout to keep and whether stderr stays out of it,
    run the command; return the HookResult (output: stdout, with stderr unless
    separate; a failure's detail ends with the last line of stderr, or of the
    output when stderr is empty or merged)."""
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stderr else subprocess.STDOUT,
            env=_child_environment(env_extra),
            start_new_session=True,
        )
    except FileNotFoundError:
        return HookResult(False, None, f"{label}: {argv[0]} not found")
    except PermissionError:
        return HookResult(False, None, f"{label}: {argv[0]} is not executable")
    except (OSError, ValueError) as error:
        # ValueError: a NUL byte in an argument.
        reason = getattr(error, "strerror", None) or error
        return HookResult(False, None, f"{label}: cannot run {argv[0]!r}: {reason}")
    stdout = _Tail(child.stdout, keep)
    stderr = _Tail(child.stderr, OUTPUT_TAIL) if separate_stderr else None
    returncode = _supervise(child, timeout, [stdout] if stderr is None else [stdout, stderr])
    output = stdout.text()
    if returncode == 0:
        return HookResult(True, 0, f"{label}: exit 0", output)
    if returncode is None:
        detail = f"{label} timed out after {timeout:g}s (process group killed)"
    elif returncode < 0:
        detail = f"{label} killed by {_signal_name(-returncode)}"
    else:
        detail = f"{label} exited {returncode}"
    last = (stderr is not None and _last_line(stderr.text())) or _last_line(output)
    return HookResult(False, returncode, f"{detail}: {last}" if last else detail, output)


def _child_environment(extra: Mapping[str, str]) -> Dict[str, str]:
    """Given variables to add, return our environment without systemd's
    per-service variables, plus those."""
    env = {name: value for name, value in os.environ.items() if name not in _SYSTEMD_PRIVATE}
    env.update(extra)
    return env


class _Tail:
    """The last `keep` bytes read from a child's pipe."""

    def __init__(self, stream: Optional[IO[bytes]], keep: int) -> None:
        assert stream is not None
        self.stream = stream
        self.fd = stream.fileno()
        os.set_blocking(self.fd, False)
        self.open = True
        self._keep = keep
        self._data = bytearray()

    def read(self) -> int:
        """Read what the pipe has now; return how many bytes (0 also at EOF)."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return 0
        if not chunk:
            self.open = False
            return 0
        self._data += chunk
        if len(self._data) > self._keep:
            del self._data[: len(self._data) - self._keep]
        return len(chunk)

    def text(self) -> str:
        return self._data.decode("utf-8", "replace")


def _supervise(
    child: subprocess.Popen[bytes], timeout: float, tails: Sequence[_Tail]
) -> Optional[int]:
    """Given a child started in its own session and its output pipes, read
    them until the child exits or `timeout` seconds pass, killing its process
    group then; return its exit status, or None when it timed out."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    by_fd = {tail.fd: tail for tail in tails}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    timed_out = False
    try:
        while not _has_exited(child.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Short waits: a pipe may stay open after the child exits (a
            # background grandchild holds it), so its exit is watched apart.
            # With every pipe closed (unregistered), poll just sleeps.
            for fd, _event in poller.poll(min(remaining, _TICK) * 1000):
                by_fd[fd].read()
                if not by_fd[fd].open:
                    poller.unregister(fd)
        for tail in tails:
            # What it wrote just before exiting, bounded: a grandchild may write on.
            drained = 0
            while tail.open and drained < _DRAIN_LIMIT:
                count = tail.read()
                if count == 0:
                    break
                drained += count
    except BaseException:
        timed_out = True
        raise
    finally:
        if timed_out:
            _kill_group(child.pid)
        for tail in tails:
            tail.stream.close()
        returncode = child.wait()
    return None if timed_out else returncode


def _has_exited(pid: int) -> bool:
    """Given our child's PID, return whether it has exited, leaving it unreaped.

    Unreaped, its PID (which is also its process group's ID) cannot be reused,
    so signalling the group afterwards cannot hit a stranger.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    """Given the process group of a child we have not reaped yet, end it:
    SIGTERM, then SIGKILL once the leader has exited or the grace is over."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    grace = time.monotonic() + _KILL_GRACE
    while not _has_exited(pgid) and time.monotonic() < grace:
        time.sleep(_TICK)
    # Also for members that outlived their leader or ignore SIGTERM.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _display(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= _DISPLAY_WIDTH else text[: _DISPLAY_WIDTH - 1] + "…"


def _last_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= 200 else line[:199] + "…"
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
