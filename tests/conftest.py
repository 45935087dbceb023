"""Shared fixtures: stand-in apiservers on the loopback interface."""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List

import psutil
import pytest
from faulty_peers import wait_until

from agent.standin.server import StandinApiserver

if TYPE_CHECKING:
    from supervisor import Supervisors

StandinFactory = Callable[..., StandinApiserver]

# Where the suite's journals point instead of the host's journald socket.
PRIVATE_JOURNAL = "no-journald/socket"


@pytest.fixture(autouse=True)
def private_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every journal the tests open, in this process and in the agents
    they start, at a path in tmp (nothing listens there, so records go to
    stderr): the suite never writes to the host's journal, and behaves the
    same whether or not the host runs journald. Tests that read the records
    bind their own socket and set KLG_JOURNAL_SOCKET to it."""
    path = tmp_path / PRIVATE_JOURNAL
    monkeypatch.setenv("KLG_JOURNAL_SOCKET", str(path))
    # Not started by systemd, whatever started pytest.
    for name in (
        "JOURNAL_STREAM",
        "INVOCATION_ID",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "MAINPID",
    ):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def standin() -> Iterator[StandinFactory]:
    """Return a factory of started StandinApiservers (P-256 keys unless asked),
    all closed at teardown."""
    servers: List[StandinApiserver] = []

    def make(**options: Any) -> StandinApiserver:
        options.setdefault("key_type", "ec")
        server = StandinApiserver(**options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ipv6_loopback() -> str:
    """Return "::1", or skip the test on a machine without an IPv6 loopback."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    return "::1"


Spawn = Callable[..., "subprocess.Popen[bytes]"]

_SLEEP = "import time; time.sleep(60)"


def _unique_name() -> str:
    """Given nothing, return a process name no other process has (12 chars, under comm's 15)."""
    return "klg-" + os.urandom(4).hex()


def _unique_port() -> int:
    """Given nothing, return a port unlikely to be another apiserver's or another run's."""
    return random.randint(20000, 60000)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Given a tmp dir, yield a starter of named sleeping children; kill and reap them after."""
    interpreter = os.path.realpath(sys.executable)
    children: List[subprocess.Popen[bytes]] = []

    def start(name: str, *flags: str) -> subprocess.Popen[bytes]:
        link = tmp_path / name
        if not link.is_symlink():
            link.symlink_to(interpreter)
        # -S skips site imports: the child only needs to exist, quickly.
        child = subprocess.Popen(
            [str(link), "-S", "-c", _SLEEP, *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(child)
        # Popen can return (vfork) before the kernel has renamed the child;
        # wait, bounded, until /proc shows the new name.
        comm = Path(f"/proc/{child.pid}/comm")
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        for _ in range(200):
            # The kernel renames the process before its new argv is readable.
            if comm.read_text().strip() == name[:15] and cmdline.read_bytes():
                break
            time.sleep(0.01)
        return child

    yield start
    for child in children:
        child.kill()  # a no-op once the child has been reaped
        child.wait(timeout=10)


def process_gone(pid: int) -> bool:
    """Return whether pid has exited (a zombie counts: PID 1 here may not reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_process_gone(pid: int, timeout: float = 5.0) -> bool:
    """Return True as soon as pid has exited, False if it still runs after timeout."""
    return wait_until(lambda: process_gone(pid), timeout)


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Supervisors]:
    """Supervised stand-in kube-apiservers (real processes, restarted when
    they exit, each start a new certificate); all stopped at teardown."""
    from supervisor import Supervisors

    with Supervisors(tmp_path) as group:
        yield group


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Run with the umask systemd units often set (UMask=0077)."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
