"""Tests for agent.runner, against real processes: exit statuses, timeouts
that kill the whole process group, the output tail, the environment."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import List

import pytest
from conftest import process_gone, wait_process_gone

from agent.restart.runner import OUTPUT_TAIL, run_hook

PYTHON = sys.executable


@pytest.mark.parametrize(("code", "ok"), [(0, True), (1, False), (3, False)])
def test_hook_exit_codes(code: int, ok: bool) -> None:
    result = run_hook([PYTHON, "-c", f"import sys; sys.exit({code})"], {}, timeout=5)
    assert (result.ok, result.returncode) == (ok, code)


def test_hook_killed_by_a_signal() -> None:
    result = run_hook(
        [PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], {}, timeout=5
    )
    assert (result.ok, result.returncode) == (False, -signal.SIGKILL)
    assert result.detail.endswith("killed by SIGKILL")


def test_empty_hook_is_ok_without_running() -> None:
    assert run_hook([], {}, timeout=5) == run_hook((), {}, 0)
    result = run_hook([], {}, timeout=5)
    assert (result.ok, result.returncode, result.detail) == (True, None, "no command to run")


def test_missing_or_unexecutable_hook_is_a_result(tmp_path: Path) -> None:
    missing = run_hook([str(tmp_path / "nope"), "x"], {}, timeout=5)
    assert (missing.ok, missing.returncode) == (False, None)
    assert missing.detail == f"command {tmp_path / 'nope'} x: {tmp_path / 'nope'} not found"
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    denied = run_hook([str(plain)], {}, timeout=5)
    assert not denied.ok and denied.detail.endswith("is not executable")
    on_path = run_hook(["klg-no-such-command-anywhere"], {}, timeout=5)
    assert not on_path.ok and on_path.detail.endswith("not found")
    nul = run_hook(["/bin/true\0--x"], {}, timeout=5)
    assert not nul.ok and "cannot run '/bin/true\\x00--x': embedded null byte" in nul.detail


def _pids_from(path: Path, count: int) -> List[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists():
            pids = path.read_text().split()
            if len(pids) == count:
                return [int(pid) for pid in pids]
        time.sleep(0.02)
    raise AssertionError(f"{path} never held {count} PIDs")


@pytest.mark.parametrize("grandchild_ignores_sigterm", [False, True])
def test_hook_timeout_kills_the_whole_process_group(
    tmp_path: Path, grandchild_ignores_sigterm: bool
) -> None:
    pids = tmp_path / "pids"
    grandchild = "import time; time.sleep(60)"
    if grandchild_ignores_sigterm:
        grandchild = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
            "time.sleep(60)"
        )
    hook = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('waiting', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()

    result = run_hook([PYTHON, "-c", hook], {}, timeout=1.5)

    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4
    assert (result.ok, result.returncode) == (False, None)
    assert result.detail.endswith("timed out after 1.5s (process group killed): waiting")
    for pid in _pids_from(pids, 2):
        assert wait_process_gone(pid), f"PID {pid} survived the timeout"


def test_hook_output_tail_is_kept(tmp_path: Path) -> None:
    hook = (
        "import sys\n"
        "for i in range(2000): print(f'line {i:05d}')\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('certificate check failed\\n')\n"
        "sys.exit(2)\n"
    )
    result = run_hook([PYTHON, "-c", hook], {}, timeout=5)
    assert result.returncode == 2
    assert len(result.output.encode()) <= OUTPUT_TAIL
    assert result.output.endswith("line 01999\ncertificate check failed\n")
    assert result.detail.endswith("exited 2: certificate check failed")


def test_hook_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@/org/freedesktop/systemd1/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("KLG_TEST_INHERITED", "yes")
    result = run_hook(
        [PYTHON, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        {"KLG_OUTCOME": "succeeded", "KLG_TARGET": "kube-apiserver"},
        timeout=5,
    )
    env = json.loads(result.output)
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"} & set(env)
    assert env["KLG_OUTCOME"] == "succeeded" and env["KLG_TARGET"] == "kube-apiserver"
    assert env["KLG_TEST_INHERITED"] == "yes"


def test_hook_that_leaves_a_background_process_returns_when_it_exits() -> None:
    started = time.monotonic()
    result = run_hook(
        [PYTHON, "-c", "import subprocess; print(subprocess.Popen(['sleep', '30']).pid)"],
        {},
        timeout=10,
    )
    assert time.monotonic() - started < 3
    assert result.ok, result.detail
    leftover = int(result.output)
    try:
        assert not process_gone(leftover)  # left running, as a restart script's apiserver would be
    finally:
        os.kill(leftover, signal.SIGKILL)


def test_hook_stdin_is_empty() -> None:
    result = run_hook([PYTHON, "-c", "import sys; print(repr(sys.stdin.read()))"], {}, 5)
    assert result.output == "''\n"
