"""discover → probe → assess, against a real child named like an apiserver and a
real TLS stand-in on 127.0.0.1."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

import psutil
import pytest
from conftest import Spawn, StandinFactory, _unique_name

from agent.check import assumed_lifetime, resolve_endpoint, run_check
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
        (target(), process(6443, "::"), ("127.0.0.1", 6443)),
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
    port_holder = standin(expires_in=timedelta(days=200))
    child = spawn(name, f"--secure-port={port_holder.port}")
    started = datetime.fromtimestamp(psutil.Process(child.pid).create_time(), tz=timezone.utc)
    api = standin(started_at=started, lifetime=timedelta(days=1096))
    report = run_check(
        [target(process_name=name, port=api.port)], THRESHOLDS, ProcessFinder(), probe, _now
    )
    (item,) = report.targets
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
