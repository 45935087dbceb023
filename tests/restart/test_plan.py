"""`plan` and `restart` driven through the real CLI, against a supervised real
stand-in apiserver; and crash safety: `kill -9` between the written intent and
the verification must never lead to a second restart within min_interval."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

import pytest
from conftest import Spawn
from supervisor import Supervisors

ROOT = Path(__file__).resolve().parents[2]
ALWAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'


def klg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


@pytest.fixture(autouse=True)
def kubelet(spawn: Spawn) -> None:
    """Static-pod restarts need a running kubelet (a real process of that name)."""
    spawn("kubelet")


def config(tmp_path: Path, port: int, *restart: str, window: str = "") -> str:
    path = tmp_path / "config.toml"
    window = window or f'days = {ALWAYS}\nstart = "00:00"\nend = "24:00"'
    path.write_text(
        "\n".join(
            [
                f'state_dir = "{tmp_path}/state"',
                "[[targets]]",
                'name = "api"',
                'host = "127.0.0.1"',
                f"port = {port}",
                'timeout = "2s"',
                "[restart]",
                "enabled = true",
                'before_expiry = "30d"',
                'ready_timeout = "30s"',
                'command_timeout = "20s"',
                *restart,
                "[[restart.windows]]",
                window,
            ]
        )
        + "\n"
    )
    return str(path)


def test_plan_outside_the_window(supervisors: Supervisors, tmp_path: Path) -> None:
    api = supervisors.start()
    path = config(
        tmp_path,
        api.port,
        'method = "static-pod"',
        window='days = ["sat"]\nstart = "02:00"\nend = "04:00"\ntimezone = "Europe/Berlin"',
    )
    at = "2026-12-02T12:00:00Z"  # a Wednesday
    result = klg("plan", "--config", path, "--at", at)
    assert result.returncode == 0, result.stderr
    assert "api: CRITICAL" in result.stdout or "api: WARNING" in result.stdout
    assert (
        "decision: no restart (outside-window): restart planned Sat 02:00 Europe/Berlin"
        in result.stdout
    )
    assert "next opening: Sat 02:00 Europe/Berlin (2026-12-05 01:00 UTC until" in result.stdout
    data = json.loads(klg("plan", "--json", "--config", path, "--at", at).stdout)
    # The envelope of `check --json` (issue 8.11).
    assert set(data) == {"checked_at", "at", "targets"}
    assert data["at"] == "2026-12-02T12:00:00Z"
    (entry,) = data["targets"]
    assert set(entry) == {
        "name",
        "state",
        "not_after",
        "restart",
        "reason",
        "message",
        "next_window",
        "method",
        "guards",
    }
    assert (entry["name"], entry["method"]) == ("api", "static-pod")
    assert entry["reason"] == "outside-window" and entry["restart"] is False
    assert entry["next_window"] == {"start": "2026-12-05T01:00:00Z", "end": "2026-12-05T03:00:00Z"}
    inside = json.loads(
        klg("plan", "--json", "--config", path, "--at", "2026-12-05T01:30:00Z").stdout
    )["targets"][0]
    assert inside["reason"] == "due" and inside["restart"] is True
    # Inside a window, next_window is the current one.
    assert inside["next_window"] == {
        "start": "2026-12-05T01:00:00Z",
        "end": "2026-12-05T03:00:00Z",
    }
    assert inside["guards"] is None  # --at: guards are not asked
    assert api.exits() == []  # plan changes nothing


def test_plan_asks_the_guards_when_restarting_now(supervisors: Supervisors, tmp_path: Path) -> None:
    api = supervisors.start()
    path = config(tmp_path, api.port, 'method = "static-pod"', 'blocking_command = ["/bin/false"]')
    data = json.loads(klg("plan", "--json", "--config", path).stdout)["targets"]
    assert data[0]["reason"] == "blocked-command"
    assert data[0]["guards"]["command_problem"].startswith("blocking command said no")
    assert api.exits() == []


@pytest.mark.slow
def test_restart_verb_restarts_once(supervisors: Supervisors, tmp_path: Path) -> None:
    api = supervisors.start()
    old = api.wait_for_child()
    path = config(tmp_path, api.port, 'method = "static-pod"')
    first = klg("restart", "--config", path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("api: restart succeeded")
    assert api.wait_for_child(other_than=old) != old
    second = klg("restart", "--config", path)
    assert second.returncode == 1
    assert "no restart (too-soon): restart held: last restart" in second.stdout
    assert len(api.exits()) == 1


def test_restart_verb_dry_run_and_disabled(supervisors: Supervisors, tmp_path: Path) -> None:
    api = supervisors.start()
    path = config(tmp_path, api.port, 'method = "static-pod"')
    dry = klg("restart", "--dry-run", "--config", path)
    assert dry.returncode == 1
    assert "dry run: would restart now" in dry.stdout
    off = config(tmp_path, api.port, 'method = "static-pod"')
    Path(off).write_text(Path(off).read_text().replace("enabled = true", "enabled = false"))
    forced = klg("restart", "--force", "--config", off)
    assert forced.returncode == 1
    assert "no restart (disabled)" in forced.stdout
    assert api.exits() == []


def test_kill_9_between_intent_and_verification_never_restarts_twice(
    supervisors: Supervisors, tmp_path: Path
) -> None:
    api = supervisors.start()
    old = api.wait_for_child()
    runs = tmp_path / "runs"
    # The restart command: note each run, restart the apiserver, then take a
    # while, so the agent is still waiting on it when it is killed.
    script = tmp_path / "restart-apiserver"
    script.write_text(
        f'#!/bin/sh\necho "$KLG_TARGET $KLG_PID" >> {runs}\nkill -TERM "$KLG_PID"\nsleep 30\n'
    )
    script.chmod(0o755)
    path = config(tmp_path, api.port, 'method = "command"', f'command = ["{script}"]')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "restart", "--config", path],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        deadline = time.monotonic() + 20
        while not runs.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runs.exists(), "the restart command never ran"
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        _kill_leftover_sleep(script)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    (record,) = state["restarts"]
    assert record["phase"] == "intent"  # written before acting, never finished
    api.wait_for_child(other_than=old)  # the apiserver is back, readable, and due
    again = klg("restart", "--config", path)
    assert again.returncode == 1
    assert "(too-soon)" in again.stdout
    lines: List[str] = runs.read_text().splitlines()
    assert len(lines) == 1  # exactly one restart
    plan = json.loads(klg("plan", "--json", "--config", path).stdout)["targets"]
    assert plan[0]["reason"] == "too-soon"


def _kill_leftover_sleep(script: Path) -> None:
    """The killed agent's command runs in its own session; end it by PID."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(script) in cmdline:
            for child in process.children(recursive=True):
                child.kill()
            process.kill()


def test_plan_at_judges_state_days_and_decision_at_that_time(
    supervisors: Supervisors, tmp_path: Path
) -> None:
    # The stand-in's certificate is read now; judged a year and a half later
    # it has expired, and the decision says so (issue 8.10).
    api = supervisors.start()
    path = config(tmp_path, api.port, 'method = "static-pod"')
    later = (datetime.now(timezone.utc) + timedelta(days=540)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = klg("plan", "--config", path, "--at", later)
    assert result.returncode == 0, result.stderr
    # Days left at TIME, not now (the stand-in's certificate has weeks left now).
    days = re.search(r"api: EXPIRED, (-[0-9.]+) days left", result.stdout)
    assert days is not None, result.stdout
    assert float(days.group(1)) < -500
    assert "decision: RESTART NOW (expired)" in result.stdout
    entry = json.loads(klg("plan", "--json", "--config", path, "--at", later).stdout)["targets"][0]
    assert (entry["state"], entry["reason"]) == ("expired", "expired")


@pytest.mark.parametrize("bad", ["yesterday", "2026-12-05T01:00:00"])
def test_plan_at_needs_an_rfc3339_time(tmp_path: Path, bad: str) -> None:
    result = klg("plan", "--config", config(tmp_path, 1), "--at", bad)
    assert result.returncode == 64  # EX_USAGE, not restart's "failed" (2)
    assert "--at" in result.stderr


def test_plan_explains_unknown(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = config(tmp_path, port)
    # No process to estimate from (another test's kube-apiserver may be running).
    text = Path(path).read_text().replace('name = "api"\n', 'name = "api"\nprocess_name = ""\n')
    Path(path).write_text(text)
    result = klg("plan", "--config", path)
    assert result.returncode == 0, result.stderr
    assert "api: UNKNOWN" in result.stdout
    assert "decision: no restart (unknown-expiry)" in result.stdout
    assert re.search(r"\n  why unknown: .*(refused|connect)", result.stdout), result.stdout
