"""Tests for agent.discover, against real child processes.

Each child is the Python interpreter started through a symlink, so the kernel
names it after the link (`/proc/PID/comm`) and argv carries apiserver flags.
Names are random per test wherever the test allows it, so that a real
apiserver on the machine, or another run of these tests, changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any, List, Optional, Tuple

import psutil
import pytest
from conftest import Spawn, _unique_name, _unique_port

from agent.model import DEFAULT_SECURE_PORT, ApiserverProcess
from agent.observe import procscan
from agent.observe.discover import Discovery, ProcessFinder
from agent.observe.flags import read_flags


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Given a child, kill it and reap it, so its PID is gone from /proc."""
    child.kill()
    child.wait(timeout=10)


def _counting_scans(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Given monkeypatch, wrap the /proc scan and return the list its calls append to."""
    real = procscan.matching_pids
    calls: List[int] = []

    def counting(*args: Any, **kwargs: Any) -> Tuple[List[int], int]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(procscan, "matching_pids", counting)
    return calls


def _inspect(pid: int, name: str) -> Optional[ApiserverProcess]:
    return ProcessFinder()._inspect(pid, name)


def _found(discovery: Discovery) -> ApiserverProcess:
    """Given a Discovery, return its process, failing with its error when there is none."""
    assert discovery.error is None, discovery.error
    assert discovery.process is not None
    return discovery.process


# --- real children: names, flags, start time ---------------------------------


def test_child_started_through_link_is_named_after_it(spawn: Spawn) -> None:
    child = spawn("kube-apiserver", "--secure-port=16443")
    assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "kube-apiserver"


def test_finds_kube_apiserver_with_equals_port_and_spaced_address(spawn: Spawn) -> None:
    # The realistic name; a port of its own picks it even if a real one runs here.
    port = _unique_port()
    child = spawn("kube-apiserver", f"--secure-port={port}", "--bind-address", "127.0.0.2")
    process = _found(ProcessFinder().find("kube-apiserver", port))
    assert process.pid == child.pid
    assert process.name == "kube-apiserver"
    assert process.secure_port == port
    assert process.bind_address == "127.0.0.2"


def test_finds_spaced_port_and_equals_address(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name, "--secure-port", "16444", "--bind-address=127.0.0.3")
    process = _found(ProcessFinder().find(name, None))
    assert (process.pid, process.secure_port, process.bind_address) == (
        child.pid,
        16444,
        "127.0.0.3",
    )


def test_port_defaults_to_6443_without_flag(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name)
    process = _found(ProcessFinder().find(name, 6443))
    assert process.pid == child.pid
    assert process.secure_port == DEFAULT_SECURE_PORT == 6443
    assert process.bind_address is None


def test_bad_port_value_is_none_not_a_crash(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name, "--secure-port=https")
    process = _found(ProcessFinder().find(name, None))
    assert process.pid == child.pid
    assert process.secure_port is None


def test_started_at_is_aware_utc_and_matches_create_time(spawn: Spawn) -> None:
    name = _unique_name()
    before = time.time()
    child = spawn(name)
    after = time.time()
    process = _found(ProcessFinder().find(name, None))
    assert process.started_at.tzinfo is not None
    assert process.started_at.utcoffset() == timedelta(0)
    assert process.started_at.tzinfo == timezone.utc
    started = process.started_at.timestamp()
    assert abs(started - psutil.Process(child.pid).create_time()) < 1
    # Independent of psutil: the kernel's start time lies around our Popen call
    # (start times have clock-tick resolution, hence the slack).
    assert before - 1 < started < after + 1


def test_name_longer_than_comm_matches_by_argv0(spawn: Spawn) -> None:
    name = "klg-long-name-" + os.urandom(4).hex()
    assert len(name) > 15
    child = spawn(name, "--secure-port=16445")
    assert Path(f"/proc/{child.pid}/comm").read_text().strip() == name[:15]
    process = _found(ProcessFinder().find(name, None))
    assert (process.pid, process.secure_port) == (child.pid, 16445)


# --- several processes of one name -------------------------------------------


def test_several_matches_pick_the_one_on_the_target_port(spawn: Spawn) -> None:
    name = _unique_name()
    first = spawn(name, "--secure-port=16443")
    second = spawn(name, "--secure-port", "16444")
    default = spawn(name)
    finder = ProcessFinder()
    assert _found(finder.find(name, 16443)).pid == first.pid
    assert _found(finder.find(name, 16444)).pid == second.pid
    assert _found(finder.find(name, 6443)).pid == default.pid


def test_several_matches_none_on_the_target_port(spawn: Spawn) -> None:
    name = _unique_name()
    first = spawn(name, "--secure-port=16443")
    second = spawn(name, "--secure-port=16444")
    discovery = ProcessFinder().find(name, 8443)
    assert discovery.process is None
    low, high = sorted((first.pid, second.pid))
    assert discovery.error == (
        f"2 processes named {name} (PIDs {low}, {high}) and none listens on port 8443"
        " by --secure-port"
    )


def test_several_matches_on_the_same_port_is_an_error_naming_both(spawn: Spawn) -> None:
    name = _unique_name()
    first = spawn(name, "--secure-port=16443")
    second = spawn(name, "--secure-port", "16443")
    spawn(name, "--secure-port=16444")
    discovery = ProcessFinder().find(name, 16443)
    assert discovery.process is None
    low, high = sorted((first.pid, second.pid))
    assert discovery.error == f"2 processes named {name} serve port 16443 (PIDs {low}, {high})"


def test_several_matches_without_port_is_an_error(spawn: Spawn) -> None:
    name = _unique_name()
    first = spawn(name, "--secure-port=16443")
    second = spawn(name, "--secure-port=16444")
    discovery = ProcessFinder().find(name, None)
    assert discovery.process is None
    assert discovery.error is not None
    assert discovery.error.startswith(f"2 processes named {name} (PIDs ")
    assert str(first.pid) in discovery.error
    assert str(second.pid) in discovery.error


def test_single_match_on_another_port_is_not_adopted(spawn: Spawn) -> None:
    # Issue 8.12: a stray process elsewhere on the node must not turn a
    # refused probe of this target's port into a process-start estimate.
    name = _unique_name()
    child = spawn(name, "--secure-port=16443")
    discovery = ProcessFinder().find(name, 8443)
    assert discovery.process is None
    assert discovery.rejected
    assert discovery.error == (
        f"the only process named {name} (PID {child.pid} on 16443) listens on another "
        "--secure-port than this target's port 8443: not this target's"
    )


def test_single_match_without_port_flag_is_adopted_for_any_port(spawn: Spawn) -> None:
    # Without --secure-port the process serves 6443 (kube-apiserver's
    # default); a process whose flag is unreadable may serve any port.
    name = _unique_name()
    child = spawn(name, "--secure-port=https")
    assert _found(ProcessFinder().find(name, 8443)).pid == child.pid


def test_single_match_is_found_when_no_port_is_configured(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name, "--secure-port=16443")
    assert _found(ProcessFinder().find(name, None)).pid == child.pid


def test_no_match_is_an_error() -> None:
    name = _unique_name()
    assert ProcessFinder().find(name, None) == Discovery(None, f"no process named {name} found")


# --- processes that vanish, linger as zombies, or cannot be read -------------


def test_inspect_skips_a_process_gone_since_listing(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name)
    assert _inspect(child.pid, name) is not None
    _stop(child)
    assert _inspect(child.pid, name) is None


def test_scan_skips_a_process_that_exits_between_listing_and_inspection(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _unique_name()
    doomed = spawn(name, "--secure-port=16443")
    survivor = spawn(name, "--secure-port=16444")
    real = procscan.matching_pids

    def listing_then_exit(*args: Any, **kwargs: Any) -> Tuple[List[int], int]:
        pids, seen = real(*args, **kwargs)
        # Listed (its comm matches), then gone before inspection.
        assert doomed.pid in pids
        _stop(doomed)
        return pids, seen

    monkeypatch.setattr(procscan, "matching_pids", listing_then_exit)
    # Port None: had the doomed child counted, this would be "2 processes".
    assert _found(ProcessFinder().find(name, None)).pid == survivor.pid


def test_zombie_is_skipped(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name)
    child.send_signal(9)  # killed, deliberately not reaped: a real zombie
    proc = psutil.Process(child.pid)
    deadline = time.monotonic() + 5
    while proc.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "child did not become a zombie"
        time.sleep(0.01)
    assert _inspect(child.pid, name) is None
    assert ProcessFinder().find(name, None).error == f"no process named {name} found"


def test_access_denied_is_skipped(spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: as root, /proc/PID/{stat,status,cmdline} of every process are readable,
    so AccessDenied cannot be produced for real here; psutil.Process raises it
    for one listed PID instead.
    """
    name = _unique_name()
    child = spawn(name)
    unreadable = 2**22 + 1
    real_scan, real_process = procscan.matching_pids, psutil.Process

    def with_unreadable(*args: Any, **kwargs: Any) -> Tuple[List[int], int]:
        pids, seen = real_scan(*args, **kwargs)
        return [unreadable, *pids], seen + 1

    class Refusing(real_process):  # type: ignore[misc,valid-type]
        def __init__(self, pid: int) -> None:
            if pid == unreadable:
                raise psutil.AccessDenied(pid)
            super().__init__(pid)

    monkeypatch.setattr(procscan, "matching_pids", with_unreadable)
    monkeypatch.setattr(psutil, "Process", Refusing)
    assert _found(ProcessFinder().find(name, None)).pid == child.pid


def test_unlistable_proc_is_an_error(tmp_path: Path) -> None:
    discovery = ProcessFinder(proc=str(tmp_path / "missing")).find(_unique_name(), None)
    assert discovery.process is None
    assert discovery.error == "cannot list processes: No such file or directory"


def test_scan_reads_only_comm_of_processes_that_do_not_match(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 13: the cheap pass opens /proc/PID/comm for everyone and nothing
    # else; only matches are read in full.
    name = _unique_name()
    child = spawn(name)
    spawn(_unique_name())
    opened: List[str] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    pids, seen = procscan.matching_pids(procscan.wanted_comms([name]))
    assert pids == [child.pid]
    assert seen >= 2
    assert opened and all(path.endswith("/comm") for path in opened)
    assert len(opened) <= seen


# --- the steady-state cache ----------------------------------------------------


def test_second_find_reuses_the_pid_without_scanning(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _unique_name()
    child = spawn(name, "--secure-port=16443")
    calls = _counting_scans(monkeypatch)
    finder = ProcessFinder()
    first = _found(finder.find(name, 16443))
    assert len(calls) == 1
    assert _found(finder.find(name, 16443)) == first
    assert len(calls) == 1
    assert first.pid == child.pid

    # Restarted: the old PID is gone, a full scan finds the new process.
    _stop(child)
    restarted = spawn(name, "--secure-port=16443")
    again = _found(finder.find(name, 16443))
    assert len(calls) == 2
    assert again.pid == restarted.pid
    assert again.started_at >= first.started_at


def test_cache_is_per_name_and_port(spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _unique_name()
    spawn(name, "--secure-port=16443")
    calls = _counting_scans(monkeypatch)
    finder = ProcessFinder()
    _found(finder.find(name, 16443))
    _found(finder.find(name, None))
    assert len(calls) == 2


def test_same_pid_with_another_start_time_rescans(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _unique_name()
    spawn(name)
    calls = _counting_scans(monkeypatch)
    finder = ProcessFinder()
    real = _found(finder.find(name, None))
    # As if the PID now belonged to a process started later than the one we saw.
    finder._last[(name, None)] = replace(real, started_at=real.started_at - timedelta(hours=1))
    assert _found(finder.find(name, None)) == real
    assert len(calls) == 2
    assert finder._last[(name, None)] == real


def test_cached_pid_now_another_program_rescans(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _unique_name()
    child = spawn(name)
    calls = _counting_scans(monkeypatch)
    finder = ProcessFinder()
    # A PID reused by another program (this test process) with the start time
    # remembered for it: the name no longer matches, so the cache is not trusted.
    own = psutil.Process()
    own_started = _inspect(own.pid, own.name())
    assert own_started is not None
    finder._last[(name, None)] = replace(own_started, name=name)
    assert _found(finder.find(name, None)).pid == child.pid
    assert len(calls) == 1


def test_cache_is_dropped_when_the_process_is_gone(spawn: Spawn) -> None:
    name = _unique_name()
    child = spawn(name)
    finder = ProcessFinder()
    _found(finder.find(name, None))
    _stop(child)
    assert finder.find(name, None).error == f"no process named {name} found"
    assert finder._last == {}


# --- flags -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["kube-apiserver"], (None, None)),
        ([], (None, None)),
        (["kube-apiserver", "--secure-port=6443"], (6443, None)),
        (["kube-apiserver", "--secure-port", "8443"], (8443, None)),
        (["kube-apiserver", "--bind-address=10.0.0.1"], (None, "10.0.0.1")),
        (["kube-apiserver", "--bind-address", "10.0.0.1"], (None, "10.0.0.1")),
        (["x", "--bind-address", " 10.0.0.1 "], (None, "10.0.0.1")),  # pflag trims
        (["x", "--bind-address=::1"], (None, "::1")),
        (["x", "--bind-address=FD00:0:0::1"], (None, "fd00::1")),
        (["x", "--bind-address=0.0.0.0"], (None, "0.0.0.0")),
        # Last occurrence wins, across both forms.
        (["x", "--secure-port=1", "--secure-port", "2"], (2, None)),
        (["x", "--secure-port", "2", "--secure-port=3"], (3, None)),
        (["x", "--bind-address=10.0.0.1", "--bind-address=10.0.0.2"], (None, "10.0.0.2")),
        (["x", "--secure-port=6443", "--secure-port=nope"], (None, None)),
        # Bad or out-of-range values give None, never an exception.
        (["x", "--secure-port=nope"], (None, None)),
        (["x", "--secure-port="], (None, None)),
        (["x", "--secure-port"], (None, None)),
        (["x", "--secure-port=0"], (None, None)),
        (["x", "--secure-port=-1"], (None, None)),
        (["x", "--secure-port=65535"], (65535, None)),
        (["x", "--secure-port=65536"], (None, None)),
        (["x", "--secure-port=99999999999999999999999"], (None, None)),
        (["x", "--secure-port=6443.0"], (None, None)),
        (["x", "--secure-port= 6443"], (None, None)),
        (["x", "--secure-port=\uff16\uff14\uff14\uff13"], (None, None)),  # fullwidth digits
        (["x", "--bind-address=localhost"], (None, None)),
        (["x", "--bind-address="], (None, None)),
        (["x", "--bind-address=10.0.0.256"], (None, None)),
        # Go's base-0 integers, as pflag's int flags read them.
        (["x", "--secure-port=0x1A0B"], (0x1A0B, None)),
        (["x", "--secure-port=0o17"], (0o17, None)),
        (["x", "--secure-port=014453"], (0o14453, None)),
        (["x", "--secure-port=0b1010"], (10, None)),
        (["x", "--secure-port=6_443"], (6443, None)),
        (["x", "--secure-port=+6443"], (6443, None)),
        (["x", "--secure-port=08443"], (None, None)),
        # "--flag value" takes the next word whatever it is, as pflag does.
        (["x", "--secure-port", "--bind-address=10.0.0.1"], (None, None)),
        # Single dash is not a long flag for pflag; "--" ends the flags.
        (["x", "-secure-port=6443", "-bind-address", "10.0.0.1"], (None, None)),
        (["x", "--", "--secure-port=6443"], (None, None)),
        (["x", "--secure-port=1", "--", "--secure-port=2"], (1, None)),
        # component-base normalises "_" to "-" in flag names.
        (["x", "--secure_port=7443", "--bind_address=10.0.0.1"], (7443, "10.0.0.1")),
        # Look-alike flags are other flags.
        (["x", "--secure-port-x=1", "--insecure-port=2", "--secure-portal=3"], (None, None)),
        (["x", "--advertise-address=10.0.0.9", "--etcd-servers=https://e:2379"], (None, None)),
        # Positional words are skipped, flags after them still count.
        (["x", "serve", "--secure-port=8443", "-v", "2"], (8443, None)),
    ],
)
def test_read_flags(argv: List[str], expected: tuple[Optional[int], Optional[str]]) -> None:
    flags = read_flags(argv)
    assert (flags.port, flags.bind_address) == expected
