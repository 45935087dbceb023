"""Shared fixtures: stand-in apiservers on the loopback interface."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import py_compile
import random
import shlex
import shutil
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

# Worker processes (pytest -n, pytest-xdist): each runs in a PID namespace of
# its own, with /proc mounted for it, when run as root. Discovery scans /proc
# for processes by name (kube-apiserver, kubelet, ...); in one namespace a
# worker would find the processes another worker's test started. Without root
# (or unshare(1)) the workers share /proc, and the tests that need to see no
# foreign process skip, saying so.
ISOLATE_WORKERS = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


def _can_isolate_workers() -> bool:
    """Return whether this process may start workers in PID namespaces of their own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run([*ISOLATE_WORKERS, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


ROOT = Path(__file__).resolve().parent.parent


def _compile_ahead(config: pytest.Config) -> None:
    """Where PYTHONDONTWRITEBYTECODE is set, compile agent/ and the test
    modules (as pytest's assertion rewriter caches them) once, before the
    workers start, and delete what was written when the run ends: otherwise
    each worker compiles the suite again (~3 s of CPU apiece) and each of the
    ~500 Python processes the tests start compiles agent/ again."""
    if not sys.flags.dont_write_bytecode:
        return  # Python and pytest keep their caches themselves
    written: List[Path] = []
    config.add_cleanup(lambda: _remove(written))
    jobs: List[Callable[[], object]] = []
    for source in sorted((ROOT / "agent").rglob("*.py")):
        pyc = Path(importlib.util.cache_from_source(str(source)))
        if not pyc.exists():
            written.append(pyc)
            jobs.append(functools.partial(py_compile.compile, str(source), str(pyc)))
    try:  # pytest's own cache of rewritten modules; its helpers are private
        from _pytest.assertion import assertstate_key
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            get_cache_dir,
        )

        state = config.stash[assertstate_key]
    except (ImportError, KeyError, AttributeError):
        state = None  # another pytest: the workers rewrite for themselves

    def rewrite(source: Path, pyc: Path) -> None:
        pyc.parent.mkdir(exist_ok=True)
        stamp, code = _rewrite_test(source, config)
        _write_pyc(state, code, stamp, pyc)

    for source in sorted((ROOT / "tests").rglob("*.py")):
        if state is None or not (source.name.startswith("test_") or source.name == "conftest.py"):
            continue
        pyc = get_cache_dir(source) / (source.name[:-3] + PYC_TAIL)
        if _read_pyc(source, pyc) is None:
            written.append(pyc)
            jobs.append(functools.partial(rewrite, source, pyc))
    # Half in a forked child, half here: both cores, before any worker starts.
    # Ahead of time only: whatever fails here (a test module that does not
    # compile) the worker meets again, and reports, when it imports it.
    child = os.fork()
    try:
        for job in jobs[child == 0 :: 2]:
            with contextlib.suppress(Exception):
                job()
    finally:
        if child == 0:
            os._exit(0)
    os.waitpid(child, 0)


def _remove(written: List[Path]) -> None:
    """Given the bytecode files _compile_ahead wrote, delete them and the
    __pycache__ dirs they leave empty."""
    for pyc in written:
        pyc.unlink(missing_ok=True)
    for folder in {pyc.parent for pyc in written}:
        with contextlib.suppress(OSError):  # not empty: someone else's files
            folder.rmdir()


def pytest_configure(config: pytest.Config) -> None:
    """Given pytest's configuration on the controller, compile ahead and
    start each local xdist worker through unshare(1) so it sees only its
    own processes."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    specs = getattr(config.option, "tx", None)
    if specs:
        _compile_ahead(config)
    if not specs or not _can_isolate_workers():
        return
    isolated = shlex.join([*ISOLATE_WORKERS, sys.executable])
    config.option.tx = [f"popen//python={isolated}" if spec == "popen" else spec for spec in specs]


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Given the collected tests, put the slow ones (marked slow: they wait
    out real deadlines, or build packages) first, the longest first, the rest
    in their order: with workers (pytest -n, which hands out tests two at a
    time, --maxschedchunk 2) their waits then overlap the rest of the run
    instead of ending it."""
    items.sort(key=_expected_seconds, reverse=True)


def _expected_seconds(item: pytest.Item) -> float:
    """Given a test, return how long it is marked to take: slow(seconds=N),
    else 3 for plain slow, else 0."""
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else float(mark.kwargs.get("seconds", 3))


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
