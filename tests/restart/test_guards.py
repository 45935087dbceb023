"""The guards against real peers: a stand-in Kubernetes API server answering
/readyz as a hardened cluster does (401 without credentials), a real
datagram socket for the journal, real commands and processes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from apiserver_peer import ApiserverPeer
from conftest import Spawn
from journald import FakeJournald

from agent.config.loader import default_config
from agent.config.types import RestartConfig, RestartMethod
from agent.observe.probe import probe
from agent.report.journal import open_journal
from agent.restart.edges import RestartEdges
from agent.restart.guards import Guards
from agent.restart.methods import kubelet_problem


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    server = FakeJournald(tmp_path / "journal.sock")
    yield server
    server.close()


def policy(**changes: object) -> RestartConfig:
    return replace(default_config().restart, **{"method": RestartMethod.COMMAND, **changes})


def guards(journald: FakeJournald, **changes: object) -> Guards:
    return Guards(policy(**changes), RestartEdges(probe), open_journal(socket_path=journald.path))


def messages(journald: FakeJournald) -> list:  # type: ignore[type-arg]
    found = []
    while journald.pending():
        found.append(journald.receive().fields.get("MESSAGE"))
    return found


def test_a_hardened_peer_without_credentials_is_serving_said_once(
    journald: FakeJournald,
) -> None:
    with ApiserverPeer(anonymous=False) as peer:
        g = guards(journald, peers=(peer.url,))
        assert g.ask({}).peer_problem is None
        assert g.ask({}).peer_problem is None
    said = [m for m in messages(journald) if m and "readiness not visible" in m]
    assert said == [f"peer {peer.url}: /readyz answered 401: serving, readiness not visible"]


def test_with_credentials_the_peer_must_answer_ok(journald: FakeJournald, tmp_path: Path) -> None:
    with ApiserverPeer(anonymous=False, tokens={"good": "master-1"}) as peer:
        good = peer.kubeconfig(tmp_path, user="master-1", token="good")
        assert guards(journald, peers=(peer.url,), peer_kubeconfig=str(good)).ask({}) == (
            guards(journald).ask({})
        )
        assert ("GET", "/readyz", 200, "master-1") in peer.log
        bad = peer.kubeconfig(tmp_path, user="nobody", token="bad")
        found = guards(journald, peers=(peer.url,), peer_kubeconfig=str(bad)).ask({})
    assert found.peer_problem == (
        f"peer {peer.url} not ready: /readyz not ok: 401 (with credentials of {bad})"
    )


def test_blocking_command_and_kubelet(journald: FakeJournald, spawn: Spawn) -> None:
    assert guards(journald, blocking_command=("/bin/false",)).ask({}).command_problem
    static = guards(journald, method=RestartMethod.STATIC_POD)
    if kubelet_problem() is None:
        pytest.skip("a process named kubelet runs on this machine (another test's?)")
    assert static.ask({}).kubelet_problem == (
        "kubelet is not running: a stopped apiserver would not be started again"
    )
    spawn("kubelet")
    assert static.ask({}).kubelet_problem is None
