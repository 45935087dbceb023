"""A tiny supervisor that keeps one stand-in kube-apiserver running, as kubelet
(or systemd with Restart=always) keeps the real one.

As a script, `python tests/supervisor.py --state-dir DIR --port PORT [FLAGS...]`
runs `DIR/kube-apiserver -m agent.standin --secure-port=PORT
--bind-address=127.0.0.1 --key-type ec --lifetime 20d` with a few other
kube-apiserver flags the stand-in ignores, then FLAGS, where
DIR/kube-apiserver is a symlink to the real interpreter, so the child's
/proc/PID/comm reads kube-apiserver, and each start generates a new loopback
certificate. Once the child prints its "listening on" line, its PID is written
to DIR/child.pid. When it exits, a new one starts `--delay` seconds later,
with the flags in DIR/next-flags added when that file exists.
SIGTERM or SIGINT ends the child, then the supervisor.

From tests, `Supervisors` starts supervisors, each in a session of its own,
and at the end stops each one and kills whatever is left in its process group,
by the supervisor's PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import site
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, List, Optional, Sequence, Type

REPO = str(Path(__file__).resolve().parent.parent)
APISERVER = "kube-apiserver"
# At least a second: the certificate's dates are whole seconds, so a child
# started within the second its predecessor started would serve the same
# not_after. A real apiserver takes longer than that to start.
RESTART_DELAY = 1.0
_READY_TIMEOUT = 15.0


# -- the supervisor process ------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Given the supervisor's arguments, keep a stand-in apiserver running
    until SIGTERM or SIGINT; return 0."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=RESTART_DELAY)
    args, standin_flags = parser.parse_known_args(argv)
    state = Path(args.state_dir)
    link = state / APISERVER
    if not link.is_symlink():
        link.symlink_to(os.path.realpath(sys.executable))
    # The real interpreter behind a venv's python does not see the venv's
    # packages (cryptography, psutil); hand it ours, and the repository.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *site.getsitepackages()]))
    argv_child = [
        str(link),
        "-m",
        "agent.standin",
        f"--secure-port={args.port}",
        "--bind-address=127.0.0.1",
        "--key-type",
        "ec",
        "--lifetime",
        "20d",
        # Flags a kubeadm apiserver has, which the stand-in must accept and ignore.
        "--advertise-address=127.0.0.1",
        "--etcd-servers=https://127.0.0.1:2379",
        "--authorization-mode",
        "Node,RBAC",
        "--v=2",
        *standin_flags,
    ]

    stopping: List[int] = []

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        # DIR/next-flags, when a test writes it, adds flags to the next starts
        # (a new version with another lifetime, say).
        extra = state / "next-flags"
        more = extra.read_text().split() if extra.exists() else []
        child = subprocess.Popen(
            [*argv_child, *more],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        try:
            if _listening(child, stopping):
                _write_pid(state / "child.pid", child.pid)
            while not stopping and child.poll() is None:
                time.sleep(0.05)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(state / "child.pid")
            # send_signal checks that the child is not reaped yet: never a reused PID.
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            assert child.stdout is not None
            child.stdout.close()
        with open(state / "exits", "a") as exits:
            exits.write(f"{child.pid} {child.returncode}\n")
        deadline = time.monotonic() + args.delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
    return 0


def _listening(child: subprocess.Popen[bytes], stopping: List[int]) -> bool:
    """Given a starting child, return True once it says it listens, False if
    it exits or we are stopping first."""
    assert child.stdout is not None
    # The raw descriptor: a buffered read could swallow the line select waits for.
    fd = child.stdout.fileno()
    output = b""
    while not stopping and child.poll() is None:
        readable, _, _ = select.select([fd], [], [], 0.05)
        if readable:
            data = os.read(fd, 4096)
            if not data:
                return False
            output += data
            if b"\n" in output:
                return output.startswith(b"listening on ")
    return False


def _write_pid(path: Path, pid: int) -> None:
    # Written whole, then renamed: a reader never sees half a PID.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{pid}\n")
    os.replace(temporary, path)


# -- the test side -------------------------------------------------------------


class Supervised:
    """One supervisor process, started by a test in a session of its own."""

    def __init__(
        self, state_dir: Path, port: int, standin_flags: Sequence[str], delay: float
    ) -> None:
        state_dir.mkdir(parents=True)
        self.state_dir = state_dir
        self.port = port
        self._log: IO[bytes] = open(state_dir / "supervisor.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                f"--state-dir={state_dir}",
                f"--port={port}",
                f"--delay={delay}",
                *standin_flags,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )

    def child_pid(self) -> Optional[int]:
        """Return the PID of the child listening now, or None between children."""
        try:
            return int((self.state_dir / "child.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_for_child(self, other_than: Optional[int] = None) -> int:
        """Given a PID to ignore (the old child), return the PID of the child
        listening, once there is one. Raise AssertionError, with the
        supervisor's log, if none listens within 15 s."""
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            pid = self.child_pid()
            if pid is not None and pid != other_than:
                return pid
            time.sleep(0.02)
        log = (self.state_dir / "supervisor.log").read_text(errors="replace")
        raise AssertionError(f"no new {APISERVER} child listens on {self.port}:\n{log}")

    def exits(self) -> List[str]:
        """Return "PID RETURNCODE" for each child that has exited so far."""
        try:
            return (self.state_dir / "exits").read_text().splitlines()
        except FileNotFoundError:
            return []

    def close(self) -> None:
        """Stop the supervisor (it ends its child), then kill anything left in
        its process group. Its PID is ours until we reap it, so is the group's."""
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # WNOWAIT: seen exited but not reaped, so the group ID stays ours.
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


class Supervisors:
    """Starts Supervised stand-in apiservers under a directory; ends them all on exit."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._started: List[Supervised] = []

    def start(self, *standin_flags: str, delay: float = RESTART_DELAY) -> Supervised:
        """Given extra stand-in flags, start a supervisor on a free port and
        return it once its first child listens."""
        from faulty_peers import closed_port

        supervised = Supervised(
            self._directory / f"supervisor-{len(self._started)}",
            closed_port(),
            standin_flags,
            delay,
        )
        self._started.append(supervised)
        supervised.wait_for_child()
        return supervised

    def __enter__(self) -> Supervisors:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        for supervised in self._started:
            supervised.close()


if __name__ == "__main__":
    sys.exit(main())
