"""Acting on a restart decision, against real peers: a supervised stand-in
kube-apiserver process (restarted like kubelet would, a new certificate at
each start), a real datagram socket standing in for journald, a stand-in
Kubernetes API server holding the Lease, real hook commands.

The static-pod method runs without crictl here, so it SIGTERMs the process
(the crictl path and the systemd path are covered in test_restart_methods
and, on real systemd, in the packaging end-to-end test).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
from apiserver_peer import ApiserverPeer
from conftest import StandinFactory
from supervisor import Supervisors
from test_journal import FakeJournald

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
from agent.restart.restarter import Restarter, RestartOutcome
from agent.state.records import last_restart
from agent.state.store import RestartLock, read_state


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def no_crictl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without crictl on PATH the static-pod method signals the process."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


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
        return Restarter(self.config, self.journal, probe, "master-1", now).run(item, decision)

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


def test_verification_fails_when_the_certificate_is_not_later(
    supervisors: Supervisors, rig: Callable[..., Rig]
) -> None:
    fixed = (now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = supervisors.start(f"--not-after={fixed}")
    old_pid = api.wait_for_child()
    r = rig(api.port, restart='ready_timeout = "10s"')
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
    assert outcome.detail == "restart blocked: lease held by master-2"
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
