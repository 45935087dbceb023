"""Plugin text, JSON and STATUS= renderings of check reports built from plain values."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest
from builders import target_config

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import (
    ApiserverProcess,
    CheckReport,
    LoopbackCert,
    ProbeResult,
    State,
    TargetFacts,
    TargetReport,
)
from agent.report.output import (
    PLUGIN_EXIT,
    exit_code,
    perfdata,
    render_json,
    render_text,
    status_line,
    systemd_status,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
START = datetime(2026, 1, 9, 9, 58, 13, tzinfo=timezone.utc)


def item(name: str, left: Optional[timedelta], *, with_process: bool = True) -> TargetReport:
    config = target_config(name)
    cert = None
    if left is not None:
        not_after = NOW + left
        cert = LoopbackCert(
            subject="CN=apiserver-loopback-client@1767952693",
            issuer="CN=apiserver-loopback-client-ca@1767952693",
            serial="2",
            sha256="0f" * 32,
            not_before=not_after - timedelta(days=365),
            not_after=not_after,
            generated_at=not_after - timedelta(days=365) + timedelta(hours=1),
        )
    probe = ProbeResult(
        host="127.0.0.1",
        port=6443,
        server_name="apiserver-loopback-client",
        cert=cert,
        livez="absent" if cert else "not-checked",
        error=None if cert else "connection refused",
    )
    process = (
        ApiserverProcess(
            pid=790992,
            name="kube-apiserver",
            started_at=START,
            secure_port=6443,
            bind_address=None,
        )
        if with_process
        else None
    )
    facts = TargetFacts(
        target=name,
        process=process,
        discovery_error=None if process else "no process named kube-apiserver found",
        probe=probe,
    )
    return TargetReport(
        target=config,
        facts=facts,
        assessment=assess(facts, THRESHOLDS, timedelta(days=365), NOW),
    )


def report(*items: TargetReport) -> CheckReport:
    return CheckReport(checked_at=NOW, thresholds=THRESHOLDS, targets=tuple(items))


def test_status_line_shape() -> None:
    line = status_line(report(item("kube-apiserver", timedelta(days=41.2))))
    assert line == (
        "KUBE-LOOPBACK-GUARD WARNING - kube-apiserver: loopback certificate expires "
        "2027-01-09 16:48 UTC (41.2 days left) | 'kube-apiserver_days_left'=41.2;60;14"
    )


def test_perfdata_unknown_is_U_and_fractional_thresholds() -> None:
    r = CheckReport(
        checked_at=NOW,
        thresholds=Thresholds(warning=timedelta(hours=36), critical=timedelta(hours=12)),
        targets=(item("a", None, with_process=False), item("b", timedelta(days=3))),
    )
    assert perfdata(r) == "'a_days_left'=U;1.5;0.5 'b_days_left'=3.0;1.5;0.5"


def test_worst_target_first_in_summary_and_state() -> None:
    r = report(item("fine", timedelta(days=300)), item("late", timedelta(days=-2)))
    text = render_text(r)
    first, *lines = text.splitlines()
    details = [line for line in lines if not line.startswith("  note: ")]
    assert first.startswith("KUBE-LOOPBACK-GUARD EXPIRED - late: loopback certificate expired")
    assert "; fine: loopback certificate expires" in first
    assert details[0].startswith("fine: OK, expires ")
    assert details[1].startswith("late: EXPIRED, expired ")
    assert "PID 790992 started 2026-01-09 09:58:13 UTC" in details[0]
    assert exit_code(r) == 2


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (State.OK, 0),
        (State.WARNING, 1),
        (State.CRITICAL, 2),
        (State.EXPIRED, 2),
        (State.UNKNOWN, 3),
    ],
)
def test_plugin_exit_codes(state: State, code: int) -> None:
    assert PLUGIN_EXIT[state] == code


def test_process_start_detail_says_estimated() -> None:
    text = render_text(report(item("kube-apiserver", None)))
    assert "estimated expiry" in text
    assert "error: probe of 127.0.0.1:6443 failed: connection refused" in text


def test_json_shape() -> None:
    data = json.loads(render_json(report(item("kube-apiserver", timedelta(days=41)))))
    assert data["state"] == "warning"
    (t,) = data["targets"]
    assert {
        "name",
        "state",
        "source",
        "not_before",
        "not_after",
        "seconds_left",
        "lifetime_seconds",
        "subject",
        "serial",
        "sha256",
        "process",
        "livez",
        "error",
        "notes",
    } <= set(t)
    assert t["state"] == "warning"
    assert t["source"] == "probe"
    assert t["not_after"] == "2027-01-09T12:00:00Z"
    assert t["not_before"] == "2026-01-09T12:00:00Z"
    assert t["seconds_left"] == 41 * 86400
    assert t["lifetime_seconds"] == 31536000
    assert t["subject"] == "CN=apiserver-loopback-client@1767952693"
    assert t["process"] == {
        "pid": 790992,
        "started_at": "2026-01-09T09:58:13Z",
        "port": 6443,
        "bind_address": None,
    }
    assert t["livez"] == "absent"
    assert t["error"] is None
    # Cross-check: not_before 12:00 vs start - 1h = 08:58 → a note.
    assert len(t["notes"]) == 1


def test_json_unknown_has_nulls() -> None:
    data = json.loads(render_json(report(item("x", None, with_process=False))))
    (t,) = data["targets"]
    assert data["state"] == "unknown"
    assert t["process"] is None
    assert t["not_after"] is None and t["seconds_left"] is None
    assert "connection refused" in t["error"]


def test_systemd_status_line() -> None:
    r = report(item("kube-apiserver", timedelta(days=41, hours=3)))
    assert systemd_status(r) == (
        "kube-apiserver: WARNING, loopback cert expires 2027-01-09 (41 days)"
    )
    blind = systemd_status(report(item("kube-apiserver", None)))
    assert blind.startswith("kube-apiserver: WARNING, loopback cert expires ~")
    assert "estimated from process start" in blind
    gone = systemd_status(report(item("x", None, with_process=False)))
    assert gone.startswith("x: UNKNOWN, no process named kube-apiserver found")
    assert "\n" not in gone


def test_many_targets_are_summarised_in_status_and_plugin_line() -> None:
    # Issue 12: fifty-two tenant apiservers must not make fifty-two phrases.
    items = [item(f"tenant-{i:02d}/kube-apiserver-x", timedelta(days=200)) for i in range(51)]
    items.append(item("tenant-a/kube-apiserver-xyz", timedelta(days=41, hours=3)))
    r = report(*items)
    expected = "52 apiservers: 1 WARNING (tenant-a/kube-apiserver-xyz, 41 d), 51 OK"
    assert systemd_status(r) == expected
    assert status_line(r).startswith(f"KUBE-LOOPBACK-GUARD WARNING - {expected} | ")
    plans = systemd_status(r, {"tenant-a/kube-apiserver-xyz": "restart planned Sun 02:00 UTC"})
    assert plans == expected + "; tenant-a/kube-apiserver-xyz: restart planned Sun 02:00 UTC"


def test_summary_names_at_most_five_per_state() -> None:
    items = [item(f"t{i}", timedelta(days=30)) for i in range(8)]
    summary = systemd_status(report(*items))
    assert summary == (
        "8 apiservers: 8 WARNING (t0, 30 d; t1, 30 d; t2, 30 d; t3, 30 d; t4, 30 d; and 3 more)"
    )


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "expires 2027-01-08 12:00:00 UTC, 40.0 days left"),
        ("Etc/UTC", "expires 2027-01-08 12:00:00 UTC, 40.0 days left"),
        ("Europe/Berlin", "expires 2027-01-08 12:00:00 UTC (2027-01-08 13:00:00 CET), 40.0 days"),
    ],
)
def test_local_time_only_when_it_differs(
    zone: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        text = render_text(report(item("api", timedelta(days=40))))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert expected in text, text
