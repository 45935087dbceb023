"""The test suite never writes to the host's journal.

Every test runs with KLG_JOURNAL_SOCKET pointing into its tmp dir (the
autouse `private_journal` fixture in conftest.py). To prove the real socket is
never touched, the agent and a slice of the suite that logs restarts run in a
private mount namespace whose /run is a tmpfs with a trap bound at
/run/systemd/journal/socket: the host's journald is out of reach, and
whatever would have gone to it lands in the trap. A control run without the
redirection must fill the trap, so the check cannot pass because the trap
is deaf.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from journald import FakeJournald

from agent.report.journal import JOURNAL_SOCKET, JOURNAL_SOCKET_ENV, SYSLOG_IDENTIFIER, open_journal

ROOT = Path(__file__).resolve().parent.parent.parent

# Runs as root inside `unshare --mount`: a tmpfs over /run (this namespace
# only), the trap at journald's path, the command given in argv; prints the
# records the trap received as JSON.
TRAP = r"""
import json, os, socket, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
os.makedirs("/run/systemd/journal")
trap = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
trap.bind(sys.argv[1])
trap.setblocking(False)
env = json.loads(sys.argv[2])
done = subprocess.run(sys.argv[3:], env=env, capture_output=True, text=True, timeout=300)
records = []
while True:
    try:
        records.append(trap.recv(1 << 20).decode("utf-8", "replace"))
    except BlockingIOError:
        break
print(json.dumps({"rc": done.returncode, "out": done.stdout + done.stderr, "records": records}))
"""


def in_trapped_namespace(env: Dict[str, str], *command: str) -> Dict[str, object]:
    """Given an environment and a command, run it with a trap in place of
    journald's socket; return its exit code, output and the trapped records."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to put a trap at the journal socket's path")
    unshare = ["unshare", "--mount", "--propagation", "private"]
    result = subprocess.run(
        [*unshare, sys.executable, "-c", TRAP, JOURNAL_SOCKET, json.dumps(env), *command],
        capture_output=True,
        text=True,
        timeout=360,
        cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stderr
    trapped: Dict[str, object] = json.loads(result.stdout)
    return trapped


def ours(records: object) -> List[str]:
    assert isinstance(records, list)
    return [r for r in records if f"SYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}\n" in r]


def test_every_journal_in_the_suite_points_into_tmp(private_journal: Path, tmp_path: Path) -> None:
    assert os.environ[JOURNAL_SOCKET_ENV] == str(private_journal)
    assert private_journal.is_relative_to(tmp_path)
    # Nothing listens there: records go to stderr, never to JOURNAL_SOCKET.
    assert open_journal().socket_path is None


@pytest.mark.slow(seconds=5)
def test_the_real_journal_socket_is_never_touched(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    agent = [sys.executable, "-m", "agent", "run", "--config", str(bad)]
    base = {k: v for k, v in os.environ.items() if k != JOURNAL_SOCKET_ENV}
    base["PYTHONPATH"] = str(ROOT)

    # Control: without the redirection the agent speaks to journald's path,
    # and the trap hears it (else the checks below would prove nothing).
    control = in_trapped_namespace(base, *agent)
    assert control["rc"] == 78, control["out"]
    assert ours(control["records"]), control

    # Redirected to a socket of our own: it gets the record, the trap nothing.
    private = FakeJournald(tmp_path / "private.sock")
    try:
        redirected = in_trapped_namespace({**base, JOURNAL_SOCKET_ENV: private.path}, *agent)
        assert redirected["rc"] == 78, redirected["out"]
        assert private.drain() >= 1
    finally:
        private.close()
    assert ours(redirected["records"]) == []

    # The suite itself, started with the host's environment (no redirection):
    # a test that restarts an apiserver and one that refuses a config log
    # nothing to the trap.
    suite = in_trapped_namespace(
        base,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/restart/test_plan.py::test_restart_verb_restarts_once",
        "tests/test_cli.py::test_run_refuses_invalid_config_with_78",
    )
    assert suite["rc"] == 0, suite["out"]
    assert ours(suite["records"]) == [], suite["records"]
