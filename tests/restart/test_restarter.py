"""Acting on a restart decision, against real peers: a supervised stand-in
kube-apiserver process (restarted like kubelet would, a new certificate at
each start), a real datagram socket standing in for journald, a stand-in
Kubernetes API server holding the Lease, real hook commands.

The static-pod method runs without crictl here, so it SIGTERMs the process
(the crictl path and the systemd path are covered in test_restart_methods
and, on real systemd, in the packaging end-to-end test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
from apiserver_peer import ApiserverPeer
from conftest import Spawn, StandinFactory
from faulty_peers import wait_until
from journald import FakeJournald
from supervisor import Supervisors

from agent.check import run_check
from agent.config.loader import parse_config
from agent.config.types import Config
from agent.judge.decide import Reason, decide
from agent.kube.lease import format_micro_time
from agent.model import TargetReport
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe
from agent.report.events import MESSAGE_IDS, EventKind
from agent.report.journal import open_journal
from agent.restart.edges import RestartEdges
from agent.restart.methods import kubelet_problem
from agent.restart.restarter import Restarter, RestartOutcome
from agent.state.records import RestartResult, last_restart
from agent.state.store import RestartLock, read_state

ROOT = Path(__file__).resolve().parents[2]


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def no_crictl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without crictl on PATH the static-pod method signals the process."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


@pytest.fixture(autouse=True)
def kubelet(spawn: Spawn) -> subprocess.Popen[bytes]:
    """Static-pod restarts need a running kubelet: a real process of that name."""
    return spawn("kubelet")


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    server = FakeJournald(tmp_path / "journal.sock")
    yield server
    server.close()


RESTART_DEFAULTS = {
    "enabled": "true",
    "method": '"static-pod"',
    "before_expiry": '"30d"',
    "ready_timeout": '"30s"',
    "command_timeout": '"10s"',
}


def write_config(tmp_path: Path, port: int, restart: str = "", extra: str = "") -> Config:
    """The [restart] keys in `restart` override RESTART_DEFAULTS."""
    overrides = dict(line.split(" = ", 1) for line in restart.splitlines() if " = " in line)
    restart_lines = "\n".join(
        f"{key} = {value}" for key, value in {**RESTART_DEFAULTS, **overrides}.items()
    )
    text = f"""
state_dir = "{tmp_path}/state"
[[targets]]
name = "api"
process_name = "kube-apiserver"
host = "127.0.0.1"
port = {port}
timeout = "2s"
[restart]
{restart_lines}
[[restart.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
{extra}
"""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return parse_config(text, str(path))


class Rig:
    def __init__(self, config: Config, journald: FakeJournald) -> None:
        self.config = config
        self.journald = journald
        self.journal = open_journal(socket_path=journald.path)
        self.records: List[Dict[str, str]] = []
        # One restarter, as the daemon keeps one: it holds the lease after a failure.
        self.restarter = Restarter(config, self.journal, "master-1", now, RestartEdges(probe))

    def check(self) -> TargetReport:
        report = run_check(self.config.targets, self.config.thresholds, ProcessFinder(), probe, now)
        return report.targets[0]

    def restart(self) -> RestartOutcome:
        item = self.check()
        state = self.state()
        decision = decide(
            item.assessment, self.config.restart, last_restart(state, "api"), "master-1", now()
        )
        assert decision.restart, decision
        if self.restarter.config is not self.config:  # a test changed it
            self.restarter = Restarter(
                self.config, self.journal, "master-1", now, RestartEdges(probe)
            )
        return self.restarter.run(item, decision)

    def state(self):  # type: ignore[no-untyped-def]
        try:
            return read_state(self.config.state_dir)
        except FileNotFoundError:
            from agent.state.records import AgentState

            return AgentState.empty()

    def events(self, kind: EventKind) -> List[Dict[str, str]]:
        while self.journald.pending():
            self.records.append(self.journald.receive().fields)
        return [r for r in self.records if r.get("MESSAGE_ID") == MESSAGE_IDS[kind]]

    def messages(self) -> List[str]:
        while self.journald.pending():
            self.records.append(self.journald.receive().fields)
        return [r.get("MESSAGE", "") for r in self.records]

    def keep_lease(self) -> Optional[str]:
        """One daemon check's worth of lease keeping."""
        report = run_check(self.config.targets, self.config.thresholds, ProcessFinder(), probe, now)
        return self.restarter.keep_lease(report.targets, self.state())


@pytest.fixture
def rig(tmp_path: Path, journald: FakeJournald) -> Callable[..., Rig]:
    def make(port: int, restart: str = "", extra: str = "") -> Rig:
        return Rig(write_config(tmp_path, port, restart, extra), journald)

    return make


def test_due_restart_is_carried_out_and_verified(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    r = rig(api.port)
    before = r.check()
    assert before.facts.process is not None and before.facts.process.pid == old_pid
    outcome = r.restart()
    assert outcome.succeeded is True, outcome.detail
    assert outcome.acted
    assert outcome.detail.startswith("restart succeeded")
    new_pid = api.wait_for_child(other_than=old_pid)
    assert new_pid != old_pid
    after = r.check()
    assert before.assessment.not_after is not None and after.assessment.not_after is not None
    assert after.assessment.not_after > before.assessment.not_after
    # One record, the intent replaced by the outcome.
    (record,) = r.state().restarts
    assert (record.phase, record.outcome) == ("done", "succeeded")
    assert record.old_not_after == before.assessment.not_after
    assert record.new_not_after is not None and record.new_not_after > record.old_not_after
    started = r.events(EventKind.RESTART_STARTED)
    succeeded = r.events(EventKind.RESTART_SUCCEEDED)
    assert len(started) == 1 and len(succeeded) == 1
    assert succeeded[0]["RESTART_OUTCOME"] == "succeeded"
    assert succeeded[0]["TARGET"] == "api"
    # And now min_interval holds it.
    again = decide(
        after.assessment, r.config.restart, last_restart(r.state(), "api"), "master-1", now()
    )
    assert again.reason is Reason.TOO_SOON


def test_a_downgrade_to_an_earlier_not_after_is_a_renewal(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    # v1.33 (1096 days) restarted as v1.32 (365 days): the new certificate
    # expires earlier, but it was issued after the restart began (8.5).
    api = supervisors.start("--lifetime=1096d")
    old_pid = api.wait_for_child()
    r = rig(api.port, restart='ready_timeout = "20s"\nbefore_expiry = "1200d"')
    before = r.check().assessment.not_after
    (api.state_dir / "next-flags").write_text("--lifetime=365d\n")
    outcome = r.restart()
    assert outcome.succeeded is True, outcome.detail
    assert api.child_pid() != old_pid
    after = r.check().assessment.not_after
    assert before is not None and after is not None and after < before


@pytest.mark.slow(seconds=5)
def test_verification_fails_when_the_certificate_is_not_new(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    # Every start generates a certificate dated a day ago: not issued since.
    fixed = (now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = supervisors.start(f"--generated-at={fixed}")
    old_pid = api.wait_for_child()
    r = rig(api.port, restart='ready_timeout = "10s"')
    # Below the configurable minimum (10s), so the test does not wait it out:
    # the new apiserver is up in about a second, and its certificate is the old one.
    r.config = replace(
        r.config, restart=replace(r.config.restart, ready_timeout=timedelta(seconds=5))
    )
    outcome = r.restart()
    assert outcome.acted and outcome.succeeded is False
    assert "certificate not renewed" in outcome.detail
    assert api.wait_for_child(other_than=old_pid) != old_pid  # it did restart
    failed = r.events(EventKind.RESTART_FAILED)
    assert len(failed) == 1 and failed[0]["PRIORITY"] == "2"
    # A failure is for a human: never retried inside min_interval.
    assert last_restart(r.state(), "api") is not None


def test_peer_not_ready_blocks_and_does_not_count(
    supervisors: Supervisors, rig: Callable[..., Rig], standin: StandinFactory
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    sick = standin(readyz="failed")
    r = rig(api.port, restart=f'peers = ["https://127.0.0.1:{sick.port}"]')
    outcome = r.restart()
    assert not outcome.acted and outcome.succeeded is None
    assert outcome.decision.reason is Reason.BLOCKED_PEER
    assert outcome.detail.startswith(
        f"restart blocked: peer https://127.0.0.1:{sick.port} not ready"
    )
    assert api.child_pid() == old_pid and api.exits() == []
    (record,) = r.state().restarts
    assert record.outcome == "blocked"
    assert last_restart(r.state(), "api") is None  # nothing happened, nothing counts
    assert len(r.events(EventKind.RESTART_BLOCKED)) == 1


def test_blocking_command_and_pre_hook(supervisors: Supervisors, rig: Callable[..., Rig]) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    blocked = rig(api.port, restart='blocking_command = ["/bin/false"]').restart()
    assert blocked.decision.reason is Reason.BLOCKED_COMMAND
    aborted = rig(api.port, restart='pre_hook = ["/bin/sh", "-c", "exit 3"]').restart()
    assert not aborted.acted
    assert aborted.detail.startswith("restart aborted: pre_hook failed")
    assert api.child_pid() == old_pid and api.exits() == []


def test_post_hook_hears_the_outcome(
    supervisors: Supervisors, rig: Callable[..., Rig], tmp_path: Path
) -> None:
    api = supervisors.start()
    api.wait_for_child()
    out = tmp_path / "post.env"
    r = rig(api.port, restart=f'post_hook = ["/bin/sh", "-c", "env > {out}"]')
    assert r.restart().succeeded
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["KLG_OUTCOME"] == "succeeded"
    assert env["KLG_TARGET"] == "api"
    assert env["KLG_NEW_NOT_AFTER"] > env["KLG_NOT_AFTER"]
    assert "NOTIFY_SOCKET" not in env


def test_dry_run_only_logs(supervisors: Supervisors, rig: Callable[..., Rig]) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    r = rig(api.port, restart="dry_run = true")
    outcome = r.restart()
    assert not outcome.acted
    assert "dry run: would restart now" in outcome.detail
    assert r.state().restarts == ()
    assert api.child_pid() == old_pid
    assert r.events(EventKind.RESTART_PLANNED)[0]["DRY_RUN"] == "1"


def test_one_restart_at_a_time_on_the_node(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    r = rig(api.port)
    held = RestartLock(r.config.state_dir)
    assert held.acquire()
    try:
        outcome = r.restart()
    finally:
        held.release()
    assert outcome.detail == "restart skipped: another restart is in progress on this node"
    assert api.child_pid() == old_pid


@pytest.fixture
def lease_peer() -> Iterator[ApiserverPeer]:
    with ApiserverPeer() as peer:
        yield peer


def lease_table(peer: ApiserverPeer, directory: Path, user: str) -> str:
    kubeconfig = peer.kubeconfig(directory, user=user)
    return (
        "[restart.lease]\n"
        f'kubeconfig = "{kubeconfig}"\nnamespace = "kube-system"\nname = "klg"\nduration = "15m"\n'
        f'identity = "{user}"\n'
    )


def test_lease_held_by_another_master_blocks(
    supervisors: Supervisors, rig: Callable[..., Rig], lease_peer: ApiserverPeer, tmp_path: Path
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    moment = now()
    lease_peer.put_lease(
        "kube-system",
        "klg",
        {
            "holderIdentity": "master-2",
            "leaseDurationSeconds": 900,
            "acquireTime": format_micro_time(moment),
            "renewTime": format_micro_time(moment),
        },
    )
    r = rig(api.port, extra=lease_table(lease_peer, tmp_path, "master-1"))
    outcome = r.restart()
    assert outcome.decision.reason is Reason.LEASE_HELD
    # First sight of another holder's record: live, whatever its renewTime.
    assert outcome.detail.startswith("restart blocked: lease held by master-2 (taken over only")
    assert api.child_pid() == old_pid


def test_lease_taken_during_the_restart_and_released(
    supervisors: Supervisors, rig: Callable[..., Rig], lease_peer: ApiserverPeer, tmp_path: Path
) -> None:
    api = supervisors.start()
    api.wait_for_child()
    r = rig(api.port, extra=lease_table(lease_peer, tmp_path, "master-1"))
    assert r.restart().succeeded
    lease = lease_peer.lease("kube-system", "klg")
    assert lease is not None
    assert not lease["spec"].get("holderIdentity")  # released
    assert "POST" in {method for method, *_ in lease_peer.log}  # it was taken


def test_unreadable_certificate_never_restarts(rig: Callable[..., Rig]) -> None:
    r = rig(1)  # nothing listens on port 1
    item = r.check()
    decision = decide(item.assessment, r.config.restart, None, "master-1", now())
    assert decision.reason is Reason.UNKNOWN_EXPIRY and not decision.restart


# -- the lease after a failed restart (issue 8.4) -------------------------------


@pytest.mark.slow(seconds=12)
def test_failed_restart_keeps_the_lease_until_the_apiserver_is_verified(
    supervisors: Supervisors,
    rig: Callable[..., Rig],
    lease_peer: ApiserverPeer,
    tmp_path: Path,
    journald: FakeJournald,
) -> None:
    # Every start serves a certificate dated a day ago: the restart fails.
    stale = (now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = supervisors.start(f"--generated-at={stale}")
    old_pid = api.wait_for_child()
    r = rig(api.port, 'ready_timeout = "10s"', extra=lease_table(lease_peer, tmp_path, "master-1"))
    outcome = r.restart()
    assert outcome.acted and outcome.succeeded is False
    holding = "restart failed; holding lease kube-system/klg so no other master restarts"
    assert holding in r.messages()
    lease = lease_peer.lease("kube-system", "klg")
    assert lease is not None and lease["spec"]["holderIdentity"] == "master-1"

    # While the daemon runs, each check renews it and STATUS says why.
    renewed_before = lease["spec"]["renewTime"]
    assert r.keep_lease() == holding
    lease = lease_peer.lease("kube-system", "klg")
    assert lease is not None and lease["spec"]["holderIdentity"] == "master-1"
    assert lease["spec"]["renewTime"] > renewed_before

    # A new daemon (a new restarter) finds it held by this node and keeps it.
    fresh = Rig(r.config, journald)
    assert fresh.keep_lease() == holding

    # The apiserver comes back with a certificate issued now: verified, released.
    (api.state_dir / "next-flags").write_text(f"--generated-at={now():%Y-%m-%dT%H:%M:%SZ}\n")
    os.kill(api.wait_for_child(other_than=old_pid), signal.SIGTERM)
    new_pid = api.wait_for_child(other_than=api.child_pid())
    assert new_pid
    assert wait_until(lambda: fresh.keep_lease() is None, 10)
    lease = lease_peer.lease("kube-system", "klg")
    assert lease is not None and not lease["spec"].get("holderIdentity")
    assert any("released: the apiserver is verified healthy" in m for m in fresh.messages())


def test_lease_release_verb(lease_peer: ApiserverPeer, tmp_path: Path) -> None:
    config = write_config(tmp_path, 1, extra=lease_table(lease_peer, tmp_path, "master-1"))
    assert config.path is not None
    moment = format_micro_time(now())
    spec = {"holderIdentity": "master-1", "leaseDurationSeconds": 900, "renewTime": moment}
    lease_peer.put_lease("kube-system", "klg", spec)
    done = klg("lease", "release", "--config", config.path)
    assert done.returncode == 0, done.stderr
    assert "lease kube-system/klg released (was held by master-1)" in done.stdout
    lease = lease_peer.lease("kube-system", "klg")
    assert lease is not None and not lease["spec"].get("holderIdentity")
    again = klg("lease", "release", "--config", config.path)
    assert again.returncode == 1
    assert "is not held by master-1 (holder: nobody); nothing released" in again.stdout


def klg(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(ROOT),
    )


# -- peers on hardened clusters (issue 8.3) --------------------------------------


@pytest.mark.slow
def test_peer_with_anonymous_auth_off_counts_as_serving_without_credentials(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    api = supervisors.start()
    api.wait_for_child()
    with ApiserverPeer(anonymous=False) as hardened:
        r = rig(api.port, restart=f'peers = ["{hardened.url}"]\nmin_interval = "1h"')
        outcome = r.restart()
        assert outcome.succeeded is True, outcome.detail
        assert ("GET", "/readyz", 401, None) in hardened.log
        # Once, not at every restart.
        (Path(r.config.state_dir) / "state.json").unlink()
        assert r.restart().succeeded is True
    said = [m for m in r.messages() if "readiness not visible" in m]
    assert said == [f"peer {hardened.url}: /readyz answered 401: serving, readiness not visible"]


def test_peer_readyz_is_asked_with_the_lease_credentials(
    supervisors: Supervisors, rig: Callable[..., Rig], tmp_path: Path
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    with ApiserverPeer(anonymous=False) as hardened:
        lease = lease_table(hardened, tmp_path, "master-1")
        r = rig(api.port, restart=f'peers = ["{hardened.url}"]', extra=lease)
        assert r.restart().succeeded is True
        assert ("GET", "/readyz", 200, "master-1") in hardened.log
        # Credentials the peer rejects: its readiness is not known, no restart.
        (tmp_path / "state").joinpath("state.json").unlink()
        wrong = hardened.kubeconfig(tmp_path, user="nobody", token="not-a-known-token")
        r = rig(
            api.port,
            restart=f'peers = ["{hardened.url}"]\npeer_kubeconfig = "{wrong}"',
            extra=lease,
        )
        pid = api.child_pid()
        outcome = r.restart()
        assert outcome.decision.reason is Reason.BLOCKED_PEER
        assert "/readyz not ok: 401 (with credentials of " in outcome.detail
        assert api.child_pid() == pid != old_pid


# -- static pods need the kubelet (issue 8.6) ------------------------------------


def test_static_pod_restart_is_refused_while_the_kubelet_is_down(
    supervisors: Supervisors, rig: Callable[..., Rig], kubelet: subprocess.Popen[bytes]
) -> None:
    kubelet.kill()
    kubelet.wait()
    if kubelet_problem() is None:
        pytest.skip("a process named kubelet runs on this machine (another test's?)")
    api = supervisors.start()
    old_pid = api.wait_for_child()
    r = rig(api.port)
    outcome = r.restart()
    assert not outcome.acted
    assert outcome.decision.reason is Reason.KUBELET_DOWN
    assert outcome.detail == (
        "restart blocked: kubelet is not running: a stopped apiserver would not be started again"
    )
    assert api.child_pid() == old_pid and api.exits() == []
    assert last_restart(r.state(), "api") is None


# -- nothing that fails before the method counts (issue 9.8) ---------------------


def test_a_failure_before_the_method_leaves_no_counted_intent(
    supervisors: Supervisors, rig: Callable[..., Rig], lease_peer: ApiserverPeer, tmp_path: Path
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    # A server name the HTTP layer cannot encode: not a KubeconfigError today.
    broken = lease_peer.kubeconfig(tmp_path, server="https://\u00e4pi.example:6443")
    extra = (
        "[restart.lease]\n"
        f'kubeconfig = "{broken}"\nnamespace = "kube-system"\nname = "klg"\nduration = "15m"\n'
    )
    r = rig(api.port, extra=extra)
    outcome = r.restart()
    assert not outcome.acted and outcome.succeeded is None
    assert api.child_pid() == old_pid and api.exits() == []
    (record,) = r.state().restarts
    assert record.outcome in (RestartResult.ABORTED, RestartResult.BLOCKED)
    assert last_restart(r.state(), "api") is None  # it does not hold min_interval


# -- the daemon and a person, racing (issue 9.3) ---------------------------------


@pytest.mark.slow
def test_a_decision_from_an_old_state_is_taken_again_under_the_lock(
    supervisors: Supervisors, rig: Callable[..., Rig], tmp_path: Path
) -> None:
    api = supervisors.start()
    old_pid = api.wait_for_child()
    r = rig(api.port)
    # This process decides from the state as it is now: no restart yet.
    item = r.check()
    stale = decide(item.assessment, r.config.restart, None, "master-1", now())
    assert stale.restart
    # Meanwhile a person runs `restart` in another process, to the end.
    assert r.config.path is not None
    person = klg("restart", "--config", r.config.path)
    assert person.returncode == 0, person.stdout + person.stderr
    api.wait_for_child(other_than=old_pid)
    # Acting on the old decision: under the lock the history says too soon.
    outcome = r.restarter.run(item, stale)
    assert not outcome.acted
    assert outcome.decision.reason is Reason.TOO_SOON
    assert len(api.exits()) == 1
    assert [rec.outcome for rec in r.state().restarts] == [RestartResult.SUCCEEDED]


def test_budget_covers_every_step_of_a_restart(tmp_path: Path) -> None:
    def budget(restart: str = "", extra: str = "") -> float:
        config = write_config(tmp_path, 1, restart, extra)
        return Restarter(
            config, open_journal(socket_path=tmp_path / "j"), "n", now, RestartEdges(probe)
        ).budget()

    plain = budget()
    # 4 commands of 10s, ready_timeout 30s, a minute for verification's last round.
    assert plain == 4 * 10 + 30 + 60
    assert budget('ready_timeout = "5m"') == plain + 270
    assert budget('peers = ["https://10.0.0.2:6443", "https://10.0.0.3:6443"]') == plain + 20
    lease = '[restart.lease]\nkubeconfig = "/etc/kubernetes/admin.conf"\n'
    assert budget(extra=lease) == plain + 40
    assert budget("enabled = false") == 0.0
