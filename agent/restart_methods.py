"""How to restart an apiserver: its systemd unit, its static pod's container, or a command.

Each method is one bounded action returning a MethodResult with a line for the
journal. Whether to restart is decided elsewhere (agent.decide), and whether
the restart worked is checked elsewhere (agent.verify). Every command here,
hooks included, goes through one runner: argv only (no shell), stdin
/dev/null, only the tail of its output kept, our systemd notification
variables removed from its environment, and a session of its own, so that on
timeout its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import psutil

from agent.facts import ApiserverProcess
from agent.output import rfc3339

__all__ = [
    "HookResult",
    "MethodResult",
    "restart_command",
    "restart_static_pod",
    "restart_systemd",
    "run_hook",
]

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
# crictl inspect prints the whole OCI runtime spec; it must be read whole.
_INSPECT_LIMIT = 4 * 1024 * 1024
# After the command exits, what is still in the pipe is read, up to this much
# (a grandchild may keep writing into it).
_DRAIN_LIMIT = 1024 * 1024
# A command past its timeout gets SIGTERM, then SIGKILL this much later.
_KILL_GRACE = 2.0
# How often the runner looks at whether the command has exited.
_TICK = 0.05
# kubelet's default terminationGracePeriodSeconds: what a kubelet-initiated
# stop of the apiserver container would allow.
_STOP_GRACE = 30
_DISPLAY_WIDTH = 120


@dataclass(frozen=True)
class MethodResult:
    """How a restart method went: ok, and one line for the journal."""

    ok: bool
    detail: str


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


# -- the runner ----------------------------------------------------------------


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
    return _run(argv, env_extra, timeout, f"command {_display(argv)}")


def _run(
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


# -- the methods -----------------------------------------------------------------


def restart_systemd(unit: str, timeout: float, systemctl: str = "systemctl") -> MethodResult:
    """Given a unit name, a timeout in seconds and the systemctl to run, run
    `systemctl restart UNIT`; return how it went.

    systemctl waits for the restart job, so for a Type=notify apiserver exit 0
    means systemd saw it start and report ready. On timeout systemctl is
    killed; the job it queued carries on inside systemd. A unit name that is
    empty or starts with "-" (it would be read as an option) is refused.
    """
    if not unit or unit.startswith("-"):
        return MethodResult(False, f"invalid unit name {unit!r}")
    # --no-ask-password: with no terminal, fail at once instead of waiting on polkit.
    argv = [systemctl, "--no-ask-password", "restart", unit]
    ran = _run(argv, {}, timeout, f"systemctl restart {unit}")
    return MethodResult(ran.ok, ran.detail)


def restart_command(
    argv: Sequence[str], env_extra: Mapping[str, str], timeout: float
) -> MethodResult:
    """Given the restart command's argv, its extra environment (the caller
    passes KLG_TARGET, KLG_PID, KLG_NOT_AFTER) and a timeout in seconds, run it
    as run_hook does; return how it went. Exit 0 is success. An empty argv is
    a failure: nothing would restart."""
    if not argv:
        return MethodResult(False, "no restart command configured")
    ran = run_hook(argv, env_extra, timeout)
    return MethodResult(ran.ok, ran.detail)


def restart_static_pod(
    process: ApiserverProcess,
    timeout: float,
    crictl: Optional[str] = None,
    runtime_endpoint: Optional[str] = None,
    container_name: Optional[str] = None,
) -> MethodResult:
    """Given the running apiserver, a timeout in seconds, and optionally the
    crictl to use, the CRI endpoint and the container's name (default: the
    process name), make kubelet start a new apiserver; return how it went.

    With crictl (given, or found on PATH): among the running containers of
    that name, find the one whose main PID is the process or an ancestor of it
    (or the only one, when crictl does not tell its PID) and `crictl stop` it
    gracefully (SIGTERM, SIGKILL after up to 30 s); kubelet starts a new one.
    All crictl runs together take at most `timeout`. Without crictl: send
    SIGTERM to the process. Either way the PID is first checked to still be
    the same process (start time and name): a reused PID is never signalled.
    """
    tool = crictl or shutil.which("crictl")
    if tool is None:
        return _terminate(process)
    return _stop_container(process, tool, runtime_endpoint, container_name or process.name, timeout)


def _terminate(process: ApiserverProcess) -> MethodResult:
    """Given the apiserver process, send it SIGTERM if its PID still is that process."""
    pid = process.pid
    # A pidfd pins the process: if the PID is reused after the check below,
    # the signal goes nowhere instead of to the newcomer.
    pidfd = _open_pidfd(pid)
    try:
        problem = _identity_problem(process)
        if problem is not None:
            return MethodResult(False, f"{problem}; not signalled")
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return MethodResult(False, f"PID {pid} exited before the signal; not signalled")
    except PermissionError:
        return MethodResult(False, f"not permitted to signal PID {pid}")
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return MethodResult(True, f"sent SIGTERM to PID {pid}")


def _open_pidfd(pid: int) -> Optional[int]:
    """Given a PID, return a pidfd for it, or None where pidfds are unavailable
    (Linux before 5.3, seccomp) or the process is gone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _identity_problem(process: ApiserverProcess) -> Optional[str]:
    """Given the process found earlier, return why its PID is not that process
    any more, or None when it still is."""
    pid = process.pid
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return f"PID {pid} has already exited"
            started = datetime.fromtimestamp(proc.create_time(), tz=timezone.utc)
            comm = proc.name()
            argv = proc.cmdline()
    except psutil.NoSuchProcess:
        return f"PID {pid} is gone"
    except psutil.AccessDenied:
        return f"not permitted to read PID {pid}"
    if started != process.started_at:
        return (
            f"PID {pid} is another process now (started {rfc3339(started)}, "
            f"not {rfc3339(process.started_at)})"
        )
    if comm != process.name and not (argv and os.path.basename(argv[0]) == process.name):
        return f"PID {pid} is {comm!r} now, not {process.name!r}"
    return None


def _ancestry(pid: int) -> List[int]:
    """Given a PID, return it followed by its ancestors' PIDs, nearest first."""
    try:
        return [pid] + [parent.pid for parent in psutil.Process(pid).parents()]
    except psutil.Error:
        return [pid]


@dataclass(frozen=True)
class _Container:
    id: str
    pid: Optional[int]


def _stop_container(
    process: ApiserverProcess,
    crictl: str,
    runtime_endpoint: Optional[str],
    name: str,
    timeout: float,
) -> MethodResult:
    """Given the process, crictl, the CRI endpoint, the container name and a
    timeout, stop the container that runs the process; return how it went."""
    problem = _identity_problem(process)
    if problem is not None:
        return MethodResult(False, f"{problem}; no container stopped")
    deadline = time.monotonic() + timeout
    base = [crictl] + (["--runtime-endpoint", runtime_endpoint] if runtime_endpoint else [])

    # crictl warns on stderr (no endpoint configured, deprecated flags):
    # only stdout is parsed.
    listed = _run(
        [*base, "ps", "--name", name, "-q"],
        {},
        _left(deadline),
        f"crictl ps --name {name}",
        separate_stderr=True,
    )
    if not listed.ok:
        return MethodResult(False, listed.detail)
    containers: List[_Container] = []
    for container_id in listed.output.split():
        inspected = _run(
            [*base, "inspect", "-o", "json", container_id],
            {},
            _left(deadline),
            f"crictl inspect {_short(container_id)}",
            keep=_INSPECT_LIMIT,
            separate_stderr=True,
        )
        if not inspected.ok:
            return MethodResult(False, inspected.detail)
        try:
            container = _running_container(container_id, name, inspected.output)
        except ValueError as error:
            return MethodResult(False, f"crictl inspect {_short(container_id)}: {error}")
        if container is not None:
            containers.append(container)

    chosen, how = _choose(containers, _ancestry(process.pid), process.pid, name)
    if chosen is None:
        return MethodResult(False, f"{how}; no container stopped")
    grace = max(1, min(_STOP_GRACE, int(_left(deadline) / 2)))
    stopped = _run(
        [*base, "stop", "--timeout", str(grace), chosen.id],
        {},
        _left(deadline),
        f"crictl stop {_short(chosen.id)}",
        separate_stderr=True,
    )
    return MethodResult(stopped.ok, f"{stopped.detail} ({how})")


def _running_container(container_id: str, name: str, text: str) -> Optional[_Container]:
    """Given an ID, the wanted name and `crictl inspect -o json` output, return
    the container if it is running under exactly that name. Raise ValueError
    if the output is not a JSON object."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise ValueError("output is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("output is not a JSON object")
    status = document.get("status")
    info = document.get("info")
    status = status if isinstance(status, dict) else {}
    info = info if isinstance(info, dict) else {}
    metadata = status.get("metadata")
    # crictl --name is an unanchored regular expression: check the exact name.
    if not isinstance(metadata, dict) or metadata.get("name") != name:
        return None
    if status.get("state") != "CONTAINER_RUNNING":
        return None
    pid = info.get("pid")
    valid = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
    return _Container(container_id, pid if valid else None)


def _choose(
    containers: Sequence[_Container], ancestry: Sequence[int], pid: int, name: str
) -> Tuple[Optional[_Container], str]:
    """Given the running containers of the name, the process's PID and its
    ancestors (nearest first), return the container running it and how it was
    matched, or None and why none was."""
    by_pid: Dict[int, _Container] = {c.pid: c for c in containers if c.pid is not None}
    for depth, ancestor in enumerate(ancestry):
        if ancestor in by_pid:
            return by_pid[ancestor], (
                f"container PID {pid}"
                if depth == 0
                else f"container PID {ancestor}, an ancestor of {pid}"
            )
    unknown = [c for c in containers if c.pid is None]
    if len(containers) == 1 and unknown:
        return unknown[0], "the only running container of that name; crictl gave no PID"
    if not containers:
        return None, f"no running container named {name}"
    pids = ", ".join("?" if c.pid is None else str(c.pid) for c in containers)
    return None, f"no running container named {name} runs PID {pid} (container PIDs {pids})"


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _short(container_id: str) -> str:
    # crictl ps shows 13 characters of the 64-character ID.
    return container_id if len(container_id) <= 13 else container_id[:13] + "…"
