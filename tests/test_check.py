"""discover → probe → assess, against a real child named like an apiserver and a
real TLS stand-in on 127.0.0.1."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest
from conftest import Spawn, StandinFactory, _unique_name

from agent.check import assumed_lifetime, probe_addresses, resolve_endpoint, run_check
from agent.config.types import TargetConfig, Thresholds
from agent.model import ApiserverProcess, State
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe

THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))


def target(**changes: object) -> TargetConfig:
    values: dict[str, object] = {
        "name": "kube-apiserver",
        "process_name": "kube-apiserver",
        "host": "",
        "port": 0,
        "server_name": "apiserver-loopback-client",
        "timeout": timedelta(seconds=2),
        "lifetime": None,
    }
    values.update(changes)
    return TargetConfig(**values)  # type: ignore[arg-type]


def process(port: Optional[int], bind: Optional[str]) -> ApiserverProcess:
    return ApiserverProcess(
        pid=1,
        name="kube-apiserver",
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        secure_port=port,
        bind_address=bind,
    )


@pytest.mark.parametrize(
    ("config", "found", "expected"),
    [
        (target(), None, ("127.0.0.1", 6443)),
        (target(), process(8443, None), ("127.0.0.1", 8443)),
        (target(), process(6443, "0.0.0.0"), ("127.0.0.1", 6443)),
        # Issue 8.12: "::" probes ::1 first (then 127.0.0.1, see probe_addresses).
        (target(), process(6443, "::"), ("::1", 6443)),
        (target(), process(6443, "10.0.0.5"), ("10.0.0.5", 6443)),
        (target(), process(6443, "fd00::5"), ("fd00::5", 6443)),
        (target(host="::1", port=7443), process(8443, "10.0.0.5"), ("::1", 7443)),
        (target(host="[::1]"), None, ("[::1]", 6443)),
    ],
)
def test_resolve_endpoint(
    config: TargetConfig, found: Optional[ApiserverProcess], expected: tuple[str, int]
) -> None:
    assert resolve_endpoint(config, found) == expected


@pytest.mark.parametrize(
    ("config", "found", "expected"),
    [
        (target(), process(6443, "::"), (("::1", "127.0.0.1"), 6443)),
        (target(), process(6443, "0.0.0.0"), (("127.0.0.1",), 6443)),
        (target(), process(6443, None), (("127.0.0.1",), 6443)),
        (target(kind="k3s"), None, (("127.0.0.1", "::1"), 6444)),
        (target(kind="microk8s"), None, (("127.0.0.1",), 16443)),
        (target(host="10.0.0.1"), process(6443, "::"), (("10.0.0.1",), 6443)),
    ],
)
def test_probe_addresses(
    config: TargetConfig,
    found: Optional[ApiserverProcess],
    expected: tuple[tuple[str, ...], int],
) -> None:
    assert probe_addresses(config, found) == expected


def test_wildcard_v6_bind_falls_back_to_127_0_0_1(spawn: Spawn, standin: StandinFactory) -> None:
    # Issue 8.12: --bind-address=:: probes ::1 first; where nothing answers
    # there (the stand-in listens on 127.0.0.1 only), 127.0.0.1 within the
    # same deadline.
    name = _unique_name()
    api = standin(expires_in=timedelta(days=30))
    spawn(name, f"--secure-port={api.port}", "--bind-address=::")
    report = run_check([target(process_name=name)], THRESHOLDS, ProcessFinder(), probe, _now)
    (item,) = report.targets
    assert item.facts.probe is not None
    assert (item.facts.probe.host, item.facts.probe.port) == ("127.0.0.1", api.port)
    assert item.assessment.source == "probe"


def test_process_on_another_port_is_noted_not_adopted(
    spawn: Spawn, standin: StandinFactory
) -> None:
    # Issue 8.12: the target's port is set and the only process of the name
    # serves another: the probe's answer stands alone and a note says why.
    name = _unique_name()
    api = standin(expires_in=timedelta(days=30))
    child = spawn(name, "--secure-port=1")
    report = run_check(
        [target(process_name=name, port=api.port)], THRESHOLDS, ProcessFinder(), probe, _now
    )
    (item,) = report.targets
    assert item.facts.process is None
    assert item.assessment.source == "probe"
    assert any(
        f"PID {child.pid} on 1" in note and "not this target's" in note
        for note in item.assessment.notes
    )


def test_assumed_lifetime() -> None:
    assert assumed_lifetime(target(), None) == timedelta(days=365)
    assert assumed_lifetime(target(), timedelta(days=1096)) == timedelta(days=1096)
    assert assumed_lifetime(target(lifetime=timedelta(days=30)), timedelta(days=1096)) == (
        timedelta(days=30)
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_flags_of_the_real_process_lead_the_probe(spawn: Spawn, standin: StandinFactory) -> None:
    """The child carries --secure-port/--bind-address of the stand-in; the check
    must find the child, probe where its flags say, and agree on the dates."""
    name = _unique_name()
    api = standin(expires_in=timedelta(days=30))
    child = spawn(name, f"--secure-port={api.port}", "--bind-address", "127.0.0.1")
    report = run_check([target(process_name=name)], THRESHOLDS, ProcessFinder(), probe, _now)
    (item,) = report.targets
    assert item.facts.process is not None
    assert item.facts.process.pid == child.pid
    assert item.facts.probe is not None
    assert (item.facts.probe.host, item.facts.probe.port) == ("127.0.0.1", api.port)
    assert item.assessment.state is State.WARNING
    assert item.assessment.source == "probe"
    assert item.assessment.not_after == api.pair.not_after
    # The stand-in's certificate was not made when the child started.
    assert any("not the process start minus 1h" in n for n in item.assessment.notes)
    assert report.state is State.WARNING


def test_certificate_made_at_process_start_cross_checks_clean(
    spawn: Spawn, standin: StandinFactory
) -> None:
    name = _unique_name()
    # Generated now, as at an apiserver's start; the child starts within
    # seconds, far inside the cross-check's ten minutes.
    api = standin(started_at=_now(), lifetime=timedelta(days=1096))
    child = spawn(name, f"--secure-port={api.port}")
    report = run_check(
        [target(process_name=name, port=api.port)], THRESHOLDS, ProcessFinder(), probe, _now
    )
    (item,) = report.targets
    assert item.facts.process is not None
    assert item.facts.process.pid == child.pid
    assert item.assessment.notes == ()
    assert item.assessment.lifetime == timedelta(days=1096)
    assert item.assessment.state is State.OK


def test_probe_fails_process_known_uses_learned_lifetime(spawn: Spawn) -> None:
    name = _unique_name()
    spawn(name, "--secure-port=1")  # nothing listens on port 1 of 127.0.0.1
    seen: list[Optional[ApiserverProcess]] = []

    def learned(target_name: str, found: Optional[ApiserverProcess]) -> Optional[timedelta]:
        seen.append(found)
        return timedelta(days=1096)

    report = run_check(
        [target(process_name=name)], THRESHOLDS, ProcessFinder(), probe, _now, learned
    )
    (item,) = report.targets
    assert item.assessment.source == "process-start"
    assert item.assessment.lifetime == timedelta(days=1096)
    assert item.assessment.state is State.WARNING  # never better when blind
    assert item.assessment.error == "probe of 127.0.0.1:1 failed: connection refused"
    assert seen and seen[0] is not None and seen[0].name == name


def test_no_process_and_nothing_listening_is_unknown() -> None:
    report = run_check(
        [target(process_name=_unique_name(), port=1)], THRESHOLDS, ProcessFinder(), probe, _now
    )
    assert report.state is State.UNKNOWN
    assert report.targets[0].assessment.source == "none"


def test_worst_of_several_targets(standin: StandinFactory) -> None:
    fine = standin(expires_in=timedelta(days=300))
    bad = standin(expires_in=timedelta(days=-1))
    report = run_check(
        [
            target(name="a", process_name="", port=fine.port),
            target(name="b", process_name="", port=bad.port),
        ],
        THRESHOLDS,
        ProcessFinder(),
        probe,
        _now,
    )
    assert [t.assessment.state for t in report.targets] == [State.OK, State.EXPIRED]
    assert report.state is State.EXPIRED


def test_empty_process_name_does_not_look(standin: StandinFactory) -> None:
    api = standin()
    report = run_check(
        [target(process_name="", port=api.port)], THRESHOLDS, ProcessFinder(), probe, _now
    )
    facts = report.targets[0].facts
    assert facts.process is None and facts.discovery_error is None


class _Gate:
    """A TCP relay in front of a stand-in that holds every connection until
    `expected` are open at once (or `patience` seconds pass), then relays them
    all: the peak it saw is how many probes ran in parallel."""

    def __init__(self, upstream: int, expected: int, patience: float) -> None:
        self.upstream, self.expected, self.patience = upstream, expected, patience
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.peak = 0
        self._held: List[socket.socket] = []
        self._released = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first: Optional[float] = None
        self.listener.settimeout(0.05)
        while not self._released.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                conn = None
            except OSError:
                return
            if conn is not None:
                first = first or time.monotonic()
                with self._lock:
                    self._held.append(conn)
                    self.peak = max(self.peak, len(self._held))
            enough = len(self._held) >= self.expected
            if enough or (first is not None and time.monotonic() - first > self.patience):
                self._released.set()
        for conn in self._held:
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            pairs = {conn: up, up: conn}
            with selectors.DefaultSelector() as selector:
                for sock in pairs:
                    selector.register(sock, selectors.EVENT_READ)
                while True:
                    for key, _ in selector.select(timeout=10):
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            return
                        pairs[key.fileobj].sendall(data)  # type: ignore[index]

    def close(self) -> None:
        self._released.set()
        self.listener.close()


def test_fifty_targets_are_probed_in_parallel(standin: StandinFactory) -> None:
    # Issue 12: fifty tenant apiservers are checked together, not one after
    # the other. The gate lets no probe through until all fifty connections
    # are open at once; probed one at a time, each would wait out its own
    # timeout and fail. No timing claim: the gate's peak is the proof.
    api = standin(expires_in=timedelta(days=30), max_connections=64)
    gate = _Gate(api.port, expected=50, patience=8.0)
    try:
        targets = [
            target(
                name=f"tenant-{i:02d}",
                process_name="",
                host="127.0.0.1",
                port=gate.port,
                timeout=timedelta(seconds=15),
            )
            for i in range(50)
        ]
        report = run_check(targets, THRESHOLDS, ProcessFinder(), probe, _now)
    finally:
        gate.close()
    assert gate.peak == 50
    assert [t.target.name for t in report.targets] == [f"tenant-{i:02d}" for i in range(50)]
    assert {t.assessment.source for t in report.targets} == {"probe"}
    assert {t.assessment.state for t in report.targets} == {State.WARNING}
