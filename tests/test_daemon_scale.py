"""Issue 12: `kube-loopback-guard run` as a real subprocess watching fifty
targets (stand-in apiservers on 127.0.0.1, a refused port) for several
checks: its journal volume, its STATUS= line and its memory stay bounded."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import IO, Dict, List, Tuple

import pytest
from conftest import StandinFactory
from journald import FakeJournald, Received
from test_daemon import NotifySocket, is_ready, wait_until

from agent.report.events import MESSAGE_IDS, EventKind

ROOT = Path(__file__).resolve().parent.parent

TARGETS = 50
WARNING_TARGETS = ("tenant-47", "tenant-48")  # short-lived certificates
REFUSED_TARGET = "tenant-49"  # nothing listens on its port
# Checks watched after the baseline (interval 1s): the journal and memory
# must not move over them.
LATER_CHECKS = 10
# Keeping one CheckReport per check (fifty targets with their certificates,
# facts and assessments: about 170 KiB) grows VmRSS by about 1.7 MiB over
# LATER_CHECKS and crosses this (tried); the daemon as it is grew by 0.2 to
# 0.5 MiB in the runs measured.
RSS_GROWTH_LIMIT = 3 * 512 * 1024


class JournalCollector:
    """A FakeJournald drained by a thread as records arrive: fifty records in
    one check outrun the socket's queue (net.unix.max_dgram_qlen, 10 by
    default), and the agent's non-blocking sends would fall back to stderr.
    The thread only queues the raw payloads; they are parsed when read."""

    def __init__(self, path: Path) -> None:
        self.journald = FakeJournald(path)
        self.journald.sock.settimeout(0.1)
        self._payloads: List[Received] = []
        self._stop = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop:
            try:
                self._payloads.append(self.journald.receive())
            except socket.timeout:
                continue
            except OSError:
                return

    def snapshot(self) -> List[Dict[str, str]]:
        return [received.fields for received in list(self._payloads)]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.journald.close()


class LineCollector:
    """A thread reading a child's stderr line by line as it comes."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._collect, args=(stream,), daemon=True)
        self._thread.start()

    def _collect(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def snapshot(self) -> List[str]:
        return list(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=5)


Record = Tuple[str, str]  # MESSAGE_ID, TARGET ("" for none)


def records(stderr: List[str]) -> List[Record]:
    """Given the agent's stderr lines, return every record as (MESSAGE_ID,
    TARGET). Started outside systemd, the agent writes each record there
    once: echoed after it reached the journal socket, or instead of it when
    the socket's queue was full. A line that is not a record (the agent's
    complaint that the socket is full) counts with an empty MESSAGE_ID."""
    found = []
    for line in stderr:
        message_id = re.search(r" MESSAGE_ID=(\w+)", line)
        target = re.search(r" TARGET=(\S+)", line)
        found.append((message_id.group(1) if message_id else "", target.group(1) if target else ""))
    return found


def vm_rss(pid: int) -> int:
    """Given a PID, return its resident memory in bytes (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def refused_port() -> int:
    """Return a port on 127.0.0.1 that was just free: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fifty_targets(tmp_path: Path, standin: StandinFactory) -> Path:
    """Write a config of fifty targets: 47 OK on three shared stand-ins, two
    WARNING (certificates expiring in 20 and 25 days), one refused port."""
    ok = [standin(max_connections=64) for _ in range(3)]
    warning = [standin(expires_in=timedelta(days=days)) for days in (20, 25)]
    ports = [ok[index % len(ok)].port for index in range(47)]
    ports += [server.port for server in warning] + [refused_port()]
    text = (
        f'interval = "1s"\nstate_dir = "{tmp_path}/state"\n'
        f'[metrics]\ntextfile = "{tmp_path}/klg.prom"\n'
    )
    for index, port in enumerate(ports):
        text += (
            f'[[targets]]\nname = "tenant-{index:02d}"\nprocess_name = ""\n'
            f'host = "127.0.0.1"\nport = {port}\ntimeout = "2s"\n'
        )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.slow(seconds=12)
def test_fifty_targets_keep_journal_status_and_memory_bounded(
    tmp_path: Path, fifty_targets: Path
) -> None:
    """Proves, on the real daemon with fifty targets over several checks:

    - the first check records one state-changed per target, one probe-failed
      for the refused port and agent-started (counted on stderr, which holds
      every record outside systemd; the journal socket's queue is only ten
      datagrams deep here, and the agent sends without blocking), and
      the later checks, where nothing changes, record nothing: a record per
      target per check (or any per-check record or line) breaks the equality
      of the two snapshots;
    - every STATUS= is one line, the summary "50 apiservers: …" naming only
      the targets that are not OK, under 400 characters: fifty phrases on
      one line fail it;
    - VmRSS after the later checks is within RSS_GROWTH_LIMIT of after the
      first ones: keeping every check's report (about 170 KiB each) fails
      it;
    - the state file and the metrics file hold all fifty targets.
    """
    notify = NotifySocket(tmp_path / "notify.sock")
    journal = JournalCollector(tmp_path / "journal.sock")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": notify.path,
        "KLG_JOURNAL_SOCKET": journal.journald.path,
        "PATH": "/usr/bin:/bin",
    }
    for name in ("WATCHDOG_PID", "WATCHDOG_USEC"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(fifty_targets)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    stderr = LineCollector(process.stderr)
    try:
        ready = notify.wait_for(is_ready, timeout=30)
        # Two more checks before the baseline: imports, thread pools and
        # allocator arenas settle during the first ones.
        wait_until(lambda: len(notify.statuses(ready)) >= 3)
        baseline_status = len(notify.statuses(ready))
        first, first_sent = records(stderr.snapshot()), journal.snapshot()
        rss_before = vm_rss(process.pid)
        wait_until(
            lambda: len(notify.statuses(ready)) >= baseline_status + LATER_CHECKS, timeout=60
        )
        rss_after = vm_rss(process.pid)
        later, later_sent = records(stderr.snapshot()), journal.snapshot()
        statuses = notify.statuses()
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.join()
        notify.close()
        journal.close()
    print(
        f"VmRSS {rss_before // 1024} KiB -> {rss_after // 1024} KiB "
        f"({(rss_after - rss_before) // 1024:+d} KiB over {LATER_CHECKS} checks); "
        f"{len(first)} stderr lines, {len(first_sent)} records on the journal socket"
    )

    # (1) The journal: the first check's records, then nothing.
    def targets_of(kind: EventKind) -> List[str]:
        return sorted(target for message_id, target in first if message_id == MESSAGE_IDS[kind])

    names = [f"tenant-{index:02d}" for index in range(TARGETS)]
    assert targets_of(EventKind.STATE_CHANGED) == names
    assert targets_of(EventKind.PROBE_FAILED) == [REFUSED_TARGET]
    assert targets_of(EventKind.AGENT_STARTED) == [""]
    assert len([r for r in first if r[0]]) == TARGETS + 2
    assert later == first
    # What reached the journal socket is among them, and did not grow either.
    assert {(r["MESSAGE_ID"], r.get("TARGET", "")) for r in first_sent} <= set(first)
    assert later_sent == first_sent

    # (2) STATUS=: one bounded summary line, whatever the count.
    assert len(statuses) >= baseline_status + LATER_CHECKS
    for status in statuses:
        assert "\n" not in status and len(status) < 400, status
        assert status.startswith("50 apiservers: ") and "47 OK" in status, status
    last = statuses[-1]
    assert "2 WARNING (tenant-47, 19 d; tenant-48, 24 d)" in last, last
    assert REFUSED_TARGET in last and "tenant-00" not in last, last

    # (3) Memory stays put; the files hold every target.
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert sorted(state["targets"]) == names
    metrics = (tmp_path / "klg.prom").read_text()
    for name in names:
        assert f'target="{name}"' in metrics, name
