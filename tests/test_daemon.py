"""`kube-loopback-guard run` as a real subprocess: its sd_notify conversation on a
real unix datagram socket (NOTIFY_SOCKET), its journal records on a real
datagram socket standing in for journald, a real stand-in apiserver, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from apiserver_peer import ApiserverPeer
from conftest import Spawn, StandinFactory
from journald import FakeJournald

from agent.report.events import MESSAGE_IDS, EventKind

if TYPE_CHECKING:
    from supervisor import Supervisors

ROOT = Path(__file__).resolve().parent.parent


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting sd_notify messages with times."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: List[Tuple[float, Dict[str, str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            pairs = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), pairs))

    def wait_for(
        self, match: Callable[[Dict[str, str]], bool], after: int = 0, timeout: float = 15
    ) -> int:
        """Wait until a message from index `after` on matches; return its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.messages)):
                if match(self.messages[index][1]):
                    return index
            time.sleep(0.02)
        raise AssertionError(f"no matching sd_notify message; got {self.messages[after:]}")

    def statuses(self, after: int = 0) -> List[str]:
        return [m["STATUS"] for _, m in self.messages[after:] if "STATUS" in m]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


@dataclass
class Agent:
    process: subprocess.Popen[str]
    notify: NotifySocket
    journald: FakeJournald
    config: Path
    records: List[Dict[str, str]] = field(default_factory=list)

    def journal(self) -> List[Dict[str, str]]:
        while self.journald.pending():
            self.records.append(self.journald.receive().fields)
        return self.records

    def with_id(self, kind: EventKind) -> List[Dict[str, str]]:
        return [r for r in self.journal() if r.get("MESSAGE_ID") == MESSAGE_IDS[kind]]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


def write_config(
    path: Path,
    port: int,
    *,
    interval: str = "1s",
    extra: str = "",
    process_name: str = "",
    timeout: str = "2s",
) -> None:
    path.write_text(
        f'interval = "{interval}"\nstate_dir = "{path.parent}/state"\n{extra}\n'
        f'[[targets]]\nname = "api"\nprocess_name = "{process_name}"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntimeout = "{timeout}"\n'
    )


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: List[Agent] = []

    def start(port: int, watchdog_usec: Optional[int] = None, **config: str) -> Agent:
        path = tmp_path / "config.toml"
        write_config(path, port, **config)
        notify = NotifySocket(tmp_path / f"notify{len(agents)}.sock")
        journald = FakeJournald(tmp_path / f"journal{len(agents)}.sock")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NOTIFY_SOCKET": notify.path,
            "KLG_JOURNAL_SOCKET": journald.path,
            "PATH": "/usr/bin:/bin",  # no crictl: static-pod restarts signal the process
        }
        env.pop("WATCHDOG_PID", None)
        env.pop("WATCHDOG_USEC", None)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        agent = Agent(process, notify, journald, path)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.kill()
        agent.process.wait(timeout=10)
        agent.notify.close()
        agent.journald.close()


def is_ready(m: Dict[str, str]) -> bool:
    return m.get("READY") == "1"


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def wait_checks(agent: Agent, count: int, after: int, restarts: bool = False) -> None:
    """Wait for `count` more checks after message `after`: each check ends
    with a STATUS= (with restarts enabled, the decision sends one before)."""
    per_check = 2 if restarts else 1
    wait_until(lambda: len(agent.notify.statuses(after + 1)) >= per_check * count)


def test_ready_after_first_check_with_status_line(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=41, hours=2))
    agent = start_agent(api.port)
    index = agent.notify.wait_for(is_ready)
    status = agent.notify.messages[index][1]["STATUS"]
    expected_day = api.pair.not_after.strftime("%Y-%m-%d")
    assert status == f"api: WARNING, loopback cert expires {expected_day} (41 days)"
    assert api.loopback_handshakes >= 1  # READY came after a real check
    records = agent.journal()
    started = agent.with_id(EventKind.AGENT_STARTED)
    assert len(started) == 1
    assert started[0]["MESSAGE"].endswith(": api every 1s")  # as the config writes it
    changed = agent.with_id(EventKind.STATE_CHANGED)
    assert len(changed) == 1
    record = changed[0]
    assert record["PRIORITY"] == "4"
    assert record["SYSLOG_IDENTIFIER"] == "kube-loopback-guard"
    assert record["TARGET"] == "api"
    assert record["STATE"] == "warning"
    assert record["CERT_NOT_AFTER"] == api.pair.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["CERT_NOT_BEFORE"] == api.pair.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(record["CERT_SHA256"]) == 64
    assert 41 * 86400 < int(record["CERT_SECONDS_LEFT"]) < 42 * 86400
    assert record["MESSAGE"].startswith("api: NONE -> WARNING: loopback certificate expires")
    assert all("MESSAGE" in r and "PRIORITY" in r for r in records)


def test_checks_every_interval_with_one_record_not_one_per_check(
    start_agent: Callable[..., Agent], standin: StandinFactory, tmp_path: Path
) -> None:
    api = standin(expires_in=timedelta(days=20))
    agent = start_agent(api.port, extra=f'[metrics]\ntextfile = "{tmp_path}/klg.prom"')
    agent.notify.wait_for(is_ready)
    first = api.loopback_handshakes
    # Another check (the cadence itself: tests/test_schedule.py).
    wait_until(lambda: api.loopback_handshakes >= first + 1)
    assert len(agent.with_id(EventKind.STATE_CHANGED)) == 1
    assert agent.with_id(EventKind.REMINDER) == []
    assert (tmp_path / "state" / "state.json").exists()
    metrics = (tmp_path / "klg.prom").read_text()
    assert 'kube_loopback_guard_state{target="api",state="warning"} 1' in metrics
    assert agent.process.poll() is None


def test_watchdog_cadence(start_agent: Callable[..., Agent], standin: StandinFactory) -> None:
    api = standin()
    agent = start_agent(api.port, watchdog_usec=400_000, interval="1h")
    agent.notify.wait_for(is_ready)
    time.sleep(1.2)
    pings = [t for t, m in agent.notify.messages if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 5
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 0.4 * 0.5 + 0.15, gaps  # at least every half of WATCHDOG_USEC


def test_no_watchdog_pings_without_watchdog_usec(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin()
    agent = start_agent(api.port, interval="1h")
    agent.notify.wait_for(is_ready)
    time.sleep(0.5)
    assert not [m for _, m in agent.notify.messages if "WATCHDOG" in m]


def test_sighup_reloads_valid_config(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=41))
    agent = start_agent(api.port, interval="1h")
    ready = agent.notify.wait_for(is_ready)
    write_config(agent.config, api.port, interval="1h", extra='[thresholds]\nwarning = "30d"')
    agent.signal(signal.SIGHUP)
    reloading = agent.notify.wait_for(lambda m: m.get("RELOADING") == "1", after=ready + 1)
    ready_again = agent.notify.wait_for(is_ready, after=reloading)
    agent.notify.wait_for(lambda m: m.get("STATUS", "").startswith("api: OK"), after=ready_again)
    (reloaded,) = agent.with_id(EventKind.CONFIG_RELOADED)
    assert reloaded["MESSAGE"].endswith(": 1 target(s), interval 1h")  # not "1:00:00"
    changed = agent.with_id(EventKind.STATE_CHANGED)
    assert [r["STATE"] for r in changed] == ["warning", "ok"]
    assert changed[1]["PRIORITY"] == "6"


def test_sighup_with_broken_config_keeps_the_old_one(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=41))
    agent = start_agent(api.port, interval="1h")
    ready = agent.notify.wait_for(is_ready)
    agent.config.write_text('interval = "soon"\n')
    agent.signal(signal.SIGHUP)
    reloading = agent.notify.wait_for(lambda m: m.get("RELOADING") == "1", after=ready + 1)
    after = agent.notify.wait_for(is_ready, after=reloading)
    time.sleep(0.5)
    rejected = agent.with_id(EventKind.CONFIG_REJECTED)
    assert len(rejected) == 1
    assert rejected[0]["PRIORITY"] == "3"
    assert f"{agent.config}: interval: must be a duration" in rejected[0]["MESSAGE"]
    assert agent.process.poll() is None
    # Still the old config: the fresh check still says WARNING for this target.
    assert agent.notify.statuses(after)[-1].startswith("api: WARNING")


def test_sigterm_stops_with_exit_0(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin()
    agent = start_agent(api.port, interval="1h")
    agent.notify.wait_for(is_ready)
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.process.wait(timeout=5) == 0
    assert time.monotonic() - started < 2
    agent.notify.wait_for(lambda m: m.get("STOPPING") == "1")
    assert len(agent.with_id(EventKind.AGENT_STOPPING)) == 1


def test_ready_at_boot_despite_a_hanging_peer_and_sigterm_during_the_probe(
    start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts, never speaks: the probe waits its 60 s deadline
        agent = start_agent(silent.getsockname()[1], interval="1h", timeout="60s")
        time.sleep(0.8)  # the first check is now inside the TLS handshake
        assert not [m for _, m in agent.notify.messages if m.get("READY")]
        # READY after the grace, not after the 60 s deadline: TimeoutStartSec holds.
        ready = agent.notify.wait_for(is_ready, timeout=5)
        assert agent.notify.messages[ready][1]["STATUS"] == "first check running"
        started = time.monotonic()
        agent.signal(signal.SIGTERM)
        assert agent.process.wait(timeout=5) == 0
        assert time.monotonic() - started < 1.0


def test_failing_probe_turns_state_unknown_and_the_daemon_lives(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=200))
    agent = start_agent(api.port)
    ready = agent.notify.wait_for(is_ready)
    api.close()
    unknown = agent.notify.wait_for(
        lambda m: m.get("STATUS", "").startswith("api: UNKNOWN"), after=ready
    )
    wait_checks(agent, 1, after=unknown)  # another check, still failing
    assert agent.process.poll() is None
    failed = agent.with_id(EventKind.PROBE_FAILED)
    assert len(failed) == 1  # on the change, not every interval
    assert failed[0]["PROBE_ERROR"].endswith("connection refused")
    assert failed[0]["PRIORITY"] == "3"
    states = [r["STATE"] for r in agent.with_id(EventKind.STATE_CHANGED)]
    assert states == ["ok", "unknown"]


def test_state_survives_a_restart_without_a_second_record(
    start_agent: Callable[..., Agent], standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=20))
    first = start_agent(api.port, interval="1h")
    first.notify.wait_for(is_ready)
    first.signal(signal.SIGTERM)
    assert first.process.wait(timeout=5) == 0
    assert len(first.with_id(EventKind.STATE_CHANGED)) == 1
    first.notify.close()
    first.journald.close()
    second = start_agent(api.port, interval="1h")
    second.notify.wait_for(is_ready)
    time.sleep(0.3)
    assert second.with_id(EventKind.STATE_CHANGED) == []


def test_wall_clock_jumps_neither_skip_nor_double_checks(
    standin: StandinFactory, tmp_path: Path
) -> None:
    """In-process: the wall clock jumps a day per reading, monotonic time is real."""
    from agent.config.loader import load_config
    from agent.daemon import Daemon
    from agent.observe.probe import probe
    from agent.report.journal import open_journal
    from agent.report.notify import Notifier

    api = standin(expires_in=timedelta(days=20))
    path = tmp_path / "c.toml"
    write_config(path, api.port)
    base = datetime.now(timezone.utc)
    readings = [0]

    def jumping_clock() -> datetime:
        readings[0] += 1
        return base + timedelta(days=readings[0] % 2 * 400 - 200)  # ±200 days

    daemon = Daemon(
        load_config(str(path)),
        str(path),
        open_journal(socket_path=str(tmp_path / "absent.sock")),
        Notifier({}),
        probe,
        clock=jumping_clock,
    )
    # Below the configurable minimum, to see several checks in a second.
    daemon.config = replace(daemon.config, interval=timedelta(seconds=0.25))
    timer = threading.Timer(1.1, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert daemon.run() == 0
    finally:
        timer.cancel()
    # interval 0.25 s over 1.1 s of monotonic time: 5 checks (at 0, .25, .5, .75, 1 s)
    assert 3 <= api.loopback_handshakes <= 6, api.loopback_handshakes


RESTART_IN_WINDOW = """
[restart]
enabled = true
method = "static-pod"
before_expiry = "30d"
ready_timeout = "30s"
command_timeout = "10s"
[[restart.windows]]
days = {days}
start = "00:00"
end = "24:00"
"""


@pytest.mark.slow(seconds=5)
def test_inside_a_window_exactly_one_restart(
    start_agent: Callable[..., Agent], supervisors: Supervisors, spawn: Spawn
) -> None:
    spawn("kubelet")  # static pods: kubelet starts the new apiserver
    api = supervisors.start()  # 20-day certificate: due (before_expiry 30d)
    old = api.wait_for_child()
    every_day = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
    agent = start_agent(
        api.port,
        interval="2s",
        process_name="kube-apiserver",
        extra=RESTART_IN_WINDOW.format(days=every_day),
    )
    # READY comes with the first check, before the restart (which may take
    # ready_timeout, longer than TimeoutStartSec), and says what is coming.
    ready = agent.notify.wait_for(is_ready)
    assert "restarting now: due and inside the window" in agent.notify.messages[ready][1]["STATUS"]
    agent.notify.wait_for(
        lambda m: "restart succeeded" in m.get("STATUS", ""), after=ready, timeout=60
    )
    assert api.wait_for_child(other_than=old) != old
    # Later checks see the new certificate, and min_interval holds off another.
    held = agent.notify.wait_for(lambda m: "restart held" in m.get("STATUS", ""), timeout=30)
    wait_checks(agent, 1, after=held, restarts=True)  # and another check holds off too
    assert len(api.exits()) == 1
    assert len(agent.with_id(EventKind.RESTART_STARTED)) == 1
    succeeded = agent.with_id(EventKind.RESTART_SUCCEEDED)
    assert len(succeeded) == 1
    assert succeeded[0]["NEW_CERT_NOT_AFTER"] > succeeded[0]["CERT_NOT_AFTER"]
    assert agent.process.poll() is None


def test_outside_the_window_no_restart(
    start_agent: Callable[..., Agent], supervisors: Supervisors
) -> None:
    api = supervisors.start()
    today = datetime.now(timezone.utc)
    # Windows on days other than today and yesterday (a window over midnight
    # belongs to the day it starts): none covers now.
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    other = [d for i, d in enumerate(days) if i not in (today.weekday(), (today.weekday() - 1) % 7)]
    agent = start_agent(
        api.port,
        interval="1s",
        process_name="kube-apiserver",
        extra=RESTART_IN_WINDOW.format(days=json.dumps(other[:1])),
    )
    index = agent.notify.wait_for(is_ready)
    assert "restart planned " in agent.notify.messages[index][1]["STATUS"]
    wait_checks(agent, 1, after=index, restarts=True)
    assert api.exits() == []
    planned = agent.with_id(EventKind.RESTART_PLANNED)
    assert len(planned) == 1  # on change, not every interval
    assert agent.with_id(EventKind.RESTART_STARTED) == []


@pytest.mark.slow(seconds=12)
def test_a_failed_restart_holds_the_lease_and_status_says_so(
    start_agent: Callable[..., Agent], supervisors: Supervisors, spawn: Spawn, tmp_path: Path
) -> None:
    spawn("kubelet")
    # Every start serves a certificate dated a day ago: verification fails.
    stale = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = supervisors.start(f"--generated-at={stale}")
    api.wait_for_child()
    every_day = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
    with ApiserverPeer() as peer:
        kubeconfig = peer.kubeconfig(tmp_path, user="master-1")
        lease = (
            f'[restart.lease]\nkubeconfig = "{kubeconfig}"\nname = "klg"\nidentity = "master-1"\n'
        )
        extra = RESTART_IN_WINDOW.format(days=every_day).replace('"30s"', '"10s"') + lease
        agent = start_agent(api.port, interval="2s", process_name="kube-apiserver", extra=extra)
        holding = "restart failed; holding lease kube-system/klg so no other master restarts"
        # After the failure, every check renews the lease and STATUS says why.
        first = agent.notify.wait_for(lambda m: holding in m.get("STATUS", ""), timeout=60)
        stored = peer.lease("kube-system", "klg")
        assert stored is not None and stored["spec"]["holderIdentity"] == "master-1"
        renewed = stored["spec"]["renewTime"]
        agent.notify.wait_for(lambda m: holding in m.get("STATUS", ""), after=first + 1)
        stored = peer.lease("kube-system", "klg")
        assert stored is not None and stored["spec"]["renewTime"] > renewed
        assert len(agent.with_id(EventKind.RESTART_FAILED)) == 1
        assert any(r.get("MESSAGE") == holding for r in agent.journal())
