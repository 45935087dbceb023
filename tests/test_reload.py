"""`reload`: validate, then SIGHUP the daemon; against real child processes
and a stand-in journald socket. (systemctl reload itself runs in tests/e2e.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
from journald import FakeJournald

from agent.report.events import MESSAGE_IDS, EventKind

ROOT = Path(__file__).resolve().parent.parent

# A stand-in daemon: writes "hup" to its file on each SIGHUP; the default
# SIGHUP action (terminate) would also show a signal it was not meant to get.
LISTENER = """
import signal, sys, time
def hup(signum, frame):
    with open(sys.argv[1], "a") as f:
        f.write("hup\\n")
signal.signal(signal.SIGHUP, hup)
open(sys.argv[1], "a").close()
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    heard = tmp_path / "heard"
    child = subprocess.Popen([sys.executable, "-c", LISTENER, str(heard)])
    deadline = time.monotonic() + 10
    while not heard.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield child
    child.kill()
    child.wait(timeout=10)


def reload(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "reload", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_valid_config_signals_mainpid(tmp_path: Path, daemon: subprocess.Popen[bytes]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('interval = "5m"\n')
    result = reload("--config", str(good), env={"MAINPID": str(daemon.pid)})
    assert result.returncode == 0, result.stderr
    assert f"asked PID {daemon.pid} to reload" in result.stdout
    deadline = time.monotonic() + 10
    while (tmp_path / "heard").read_text() != "hup\n" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "heard").read_text() == "hup\n"
    assert daemon.poll() is None


def test_invalid_config_fails_says_why_and_signals_nothing(
    tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('interval = "often"\n')
    journald = FakeJournald(tmp_path / "journal.sock")
    try:
        result = reload(
            "--config",
            str(bad),
            env={"MAINPID": str(daemon.pid), "KLG_JOURNAL_SOCKET": journald.path},
        )
        record = journald.receive().fields
    finally:
        journald.close()
    assert result.returncode == 78
    assert f"{bad}: interval: must be a duration" in result.stderr
    assert record["MESSAGE_ID"] == MESSAGE_IDS[EventKind.CONFIG_REJECTED]
    assert record["CONFIG_FILE"] == str(bad)
    assert "the previous one stays in force" in record["MESSAGE"]
    time.sleep(0.3)  # a stray SIGHUP would have been written by now
    assert (tmp_path / "heard").read_text() == ""
    assert daemon.poll() is None


def test_no_daemon_to_signal(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("")
    without = reload("--config", str(good), env={})
    assert without.returncode == 1
    assert "$MAINPID is not set" in without.stderr
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    stale = reload("--config", str(good), "--pid", str(gone.pid), env={})
    assert stale.returncode == 1
    assert f"cannot signal PID {gone.pid}" in stale.stderr
