"""Run `kube-loopback-guard run` as a real subprocess until its STATUS= says
enough, with sd_notify and journald on real datagram sockets in tmp; return
what it said there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

from report.test_journal import FakeJournald

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class AgentRun:
    datagrams: List[str]  # every sd_notify datagram, as sent
    statuses: List[str]  # the STATUS= values among them
    records: List[Dict[str, str]]  # journal records, fields decoded
    stderr: str


def run_agent(
    config: Path, tmp_path: Path, until: Callable[[str], bool], timeout: float = 20
) -> AgentRun:
    """Start the agent on config; stop it (SIGTERM) once a STATUS= value makes
    `until` true, or after timeout seconds."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / f"notify-{os.urandom(4).hex()}.sock"
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    journald = FakeJournald(tmp_path / f"journal-{os.urandom(4).hex()}.sock")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": str(notify_path),
        "KLG_JOURNAL_SOCKET": journald.path,
        "PATH": "/usr/bin:/bin",
    }
    datagrams: List[str] = []
    statuses: List[str] = []
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data = notify.recv(65536).decode("latin-1")
                except socket.timeout:
                    continue
                datagrams.append(data)
                found = [line[7:] for line in data.split("\n") if line.startswith("STATUS=")]
                statuses += found
                if any(until(status) for status in found):
                    break
        finally:
            agent.terminate()
            _, stderr = agent.communicate(timeout=10)
        records: List[Dict[str, str]] = []
        while journald.pending():
            records.append(journald.receive().fields)
    finally:
        notify.close()
        journald.close()
    return AgentRun(datagrams, statuses, records, stderr)
