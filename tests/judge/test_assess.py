"""The assessment is pure: plain values in, Assessment out; no clock, no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from agent.config.types import Thresholds
from agent.judge.assess import assess, state_for
from agent.model import (
    DEFAULT_LIFETIME,
    ApiserverProcess,
    LivezVerdict,
    LoopbackCert,
    ProbeResult,
    State,
    TargetFacts,
    worst,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))


def cert(not_after: datetime, lifetime: timedelta = timedelta(days=365)) -> LoopbackCert:
    not_before = not_after - lifetime
    generated = not_before + timedelta(hours=1)
    return LoopbackCert(
        subject=f"CN=apiserver-loopback-client@{int(generated.timestamp())}",
        issuer=f"CN=apiserver-loopback-client-ca@{int(generated.timestamp())}",
        serial="1f",
        sha256="ab" * 32,
        not_before=not_before,
        not_after=not_after,
        generated_at=generated,
    )


def process(started_at: datetime) -> ApiserverProcess:
    return ApiserverProcess(
        pid=4242, name="kube-apiserver", started_at=started_at, secure_port=6443, bind_address=None
    )


def probe_ok(c: LoopbackCert, livez: LivezVerdict = "absent") -> ProbeResult:
    return ProbeResult(
        host="127.0.0.1",
        port=6443,
        server_name="apiserver-loopback-client",
        cert=c,
        livez=livez,
        error=None,
    )


PROBE_REFUSED = ProbeResult(
    host="127.0.0.1",
    port=6443,
    server_name="apiserver-loopback-client",
    cert=None,
    livez="not-checked",
    error="connection refused",
)


def facts(
    c: Optional[LoopbackCert] = None,
    proc: Optional[ApiserverProcess] = None,
    livez: LivezVerdict = "absent",
    probe: Optional[ProbeResult] = None,
) -> TargetFacts:
    if probe is None:
        probe = probe_ok(c, livez) if c is not None else PROBE_REFUSED
    return TargetFacts(
        target="kube-apiserver",
        process=proc,
        discovery_error=None if proc else "no process named kube-apiserver found",
        probe=probe,
    )


@pytest.mark.parametrize(
    ("left", "state"),
    [
        (timedelta(days=300), State.OK),
        (timedelta(days=60), State.OK),
        (timedelta(days=60) - timedelta(seconds=1), State.WARNING),
        (timedelta(days=14), State.WARNING),
        (timedelta(days=14) - timedelta(seconds=1), State.CRITICAL),
        (timedelta(seconds=1), State.CRITICAL),
        (timedelta(0), State.EXPIRED),
        (timedelta(days=-3), State.EXPIRED),
    ],
)
def test_state_from_probe_by_time_left(left: timedelta, state: State) -> None:
    result = assess(facts(cert(NOW + left)), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.state is state
    assert result.source == "probe"
    assert result.seconds_left == left.total_seconds()
    assert result.not_after == NOW + left
    assert result.lifetime == timedelta(days=365)
    assert result.error is None


def test_summary_says_date_and_days() -> None:
    result = assess(facts(cert(NOW + timedelta(days=41.2))), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.summary == "loopback certificate expires 2027-01-09 16:48 UTC (41.2 days left)"
    expired = assess(facts(cert(NOW - timedelta(days=2))), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert expired.summary == "loopback certificate expired 2026-11-27 12:00 UTC (2.0 days ago)"


def test_lifetime_is_read_from_the_certificate_not_assumed() -> None:
    c = cert(NOW + timedelta(days=900), lifetime=timedelta(days=1096))
    result = assess(facts(c), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.lifetime == timedelta(days=1096)
    assert result.state is State.OK


@pytest.mark.parametrize(
    ("livez", "state"),
    [
        ("ok", State.OK),
        ("absent", State.OK),
        ("forbidden", State.OK),
        ("error", State.OK),
        ("failed", State.CRITICAL),
    ],
)
def test_failed_upstream_check_is_at_least_critical(livez: LivezVerdict, state: State) -> None:
    result = assess(
        facts(cert(NOW + timedelta(days=200)), livez=livez), THRESHOLDS, DEFAULT_LIFETIME, NOW
    )
    assert result.state is state
    assert any("livez" in n for n in result.notes) == (livez == "failed")


def test_failed_upstream_check_keeps_expired() -> None:
    result = assess(
        facts(cert(NOW - timedelta(hours=2)), livez="failed"), THRESHOLDS, DEFAULT_LIFETIME, NOW
    )
    assert result.state is State.EXPIRED


def test_not_yet_valid_is_critical() -> None:
    c = cert(NOW + timedelta(days=366))  # not_before = now + 1 day
    result = assess(facts(c), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.state is State.CRITICAL
    assert "not valid before" in result.summary


def test_probe_failed_process_known_estimates_from_start() -> None:
    started = NOW - timedelta(days=100)
    result = assess(facts(proc=process(started)), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.source == "process-start"
    assert result.not_before == started - timedelta(hours=1)
    assert result.not_after == started - timedelta(hours=1) + timedelta(days=365)
    # 264.96 days left would be OK, but a blind probe is never better than WARNING.
    assert result.state is State.WARNING
    assert result.error == "probe of 127.0.0.1:6443 failed: connection refused"
    assert result.summary.startswith("probe of 127.0.0.1:6443 failed: connection refused; ")
    assert "365-day" in result.notes[0]


def test_estimate_uses_the_assumed_lifetime() -> None:
    started = NOW - timedelta(days=360)
    short = assess(facts(proc=process(started)), THRESHOLDS, timedelta(days=365), NOW)
    long = assess(facts(proc=process(started)), THRESHOLDS, timedelta(days=1096), NOW)
    assert short.state is State.CRITICAL
    assert long.state is State.WARNING
    old = assess(
        facts(proc=process(NOW - timedelta(days=400))), THRESHOLDS, timedelta(days=365), NOW
    )
    assert old.state is State.EXPIRED


def test_neither_is_unknown_with_both_reasons() -> None:
    result = assess(facts(), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.state is State.UNKNOWN
    assert result.source == "none"
    assert result.seconds_left is None
    assert result.error == (
        "no process named kube-apiserver found; probe of 127.0.0.1:6443 failed: connection refused"
    )


def test_cross_check_agreeing_start_gives_no_note() -> None:
    c = cert(NOW + timedelta(days=200))
    start = c.not_before + timedelta(hours=1, minutes=5)
    result = assess(facts(c, proc=process(start)), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.notes == ()


def test_cross_check_disagreeing_start_is_a_note_and_probe_wins() -> None:
    c = cert(NOW + timedelta(days=200))
    start = c.not_before + timedelta(hours=2)
    result = assess(facts(c, proc=process(start)), THRESHOLDS, DEFAULT_LIFETIME, NOW)
    assert result.source == "probe"
    assert result.not_after == c.not_after
    assert len(result.notes) == 1
    assert "not the process start minus 1h" in result.notes[0]
    assert "PID 4242" in result.notes[0]


def test_worst_state_wins() -> None:
    assert worst([State.OK, State.WARNING]) is State.WARNING
    assert worst([State.WARNING, State.UNKNOWN]) is State.UNKNOWN
    assert worst([State.UNKNOWN, State.CRITICAL]) is State.CRITICAL
    assert worst([State.CRITICAL, State.EXPIRED, State.OK]) is State.EXPIRED
    assert worst([]) is State.OK


def test_state_for_thresholds_are_exclusive() -> None:
    assert state_for(60 * 86400, THRESHOLDS) is State.OK
    assert state_for(14 * 86400, THRESHOLDS) is State.WARNING
