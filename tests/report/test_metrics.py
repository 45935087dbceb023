"""The textfile-collector output: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import math
import os
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
from builders import apiserver_process as process
from builders import loopback_cert as cert_for
from builders import probe_result as probe
from builders import target_config
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent import __version__
from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import CheckReport, State, TargetFacts, TargetReport
from agent.report.metrics import format_value, render_metrics, write_metrics
from agent.state.records import RestartRecord

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
P = "kube_loopback_guard_"

FAMILIES = {
    P + "cert_not_after_timestamp_seconds",
    P + "cert_not_before_timestamp_seconds",
    P + "cert_estimated_not_after_timestamp_seconds",
    P + "cert_seconds_left",
    P + "probe_success",
    P + "state",
    P + "process_start_time_seconds",
    P + "livez_check",
    P + "restart_last_outcome",
    P + "last_check_timestamp_seconds",
    P + "build_info",
}


def report_for(facts: TargetFacts, lifetime: timedelta = timedelta(days=365)) -> TargetReport:
    return TargetReport(
        target=target_config(facts.target),
        facts=facts,
        assessment=assess(facts, THRESHOLDS, lifetime, NOW),
    )


# A probed certificate with 40.9 days left (WARNING), a process started at a fraction of a second.
STARTED = datetime(2026, 1, 9, 9, 58, 13, 250000, tzinfo=timezone.utc)
PROBED = report_for(
    TargetFacts(
        target="kube-apiserver",
        process=process(STARTED),
        discovery_error=None,
        probe=probe(cert_for(STARTED, timedelta(days=365)), livez="ok"),
    )
)
# The probe failed, the process is known: an estimate.
ESTIMATED = report_for(
    TargetFacts(
        target="aggregated",
        process=process(datetime(2026, 1, 1, tzinfo=timezone.utc), pid=77),
        discovery_error=None,
        probe=probe(None, livez="not-checked"),
    ),
    lifetime=timedelta(days=1096),
)
# Neither: UNKNOWN, no dates at all.
BLIND = report_for(
    TargetFacts(
        target="blind",
        process=None,
        discovery_error="no process named kube-apiserver found",
        probe=probe(None, livez="not-checked"),
    )
)
# Expired three days and an hour ago (not_before is the start − 1 h).
EXPIRED_START = NOW - timedelta(days=368)
EXPIRED = report_for(
    TargetFacts(
        target="old",
        process=process(EXPIRED_START, pid=9),
        discovery_error=None,
        probe=probe(cert_for(EXPIRED_START, timedelta(days=365)), livez="failed"),
    )
)

REPORT = CheckReport(
    checked_at=NOW + timedelta(seconds=1.5),
    thresholds=THRESHOLDS,
    targets=(PROBED, ESTIMATED, BLIND, EXPIRED),
)


def parse(text: str) -> Dict[str, List[Sample]]:
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"{family.name} parsed twice"
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        families[family.name] = family.samples
    return families


def by_target(samples: List[Sample]) -> Dict[str, float]:
    values = {}
    for sample in samples:
        assert set(sample.labels) == {"target"}, sample
        values[sample.labels["target"]] = sample.value
    return values


def test_every_family_once_with_help_and_type() -> None:
    text = render_metrics(REPORT)
    families = parse(text)
    assert set(families) == FAMILIES
    lines = text.splitlines()
    for name in FAMILIES:
        assert sum(line.startswith(f"# HELP {name} ") for line in lines) == 1, name
        assert lines.count(f"# TYPE {name} gauge") == 1, name
        # The exposition format wants a family's samples together, after its TYPE.
        start = lines.index(f"# TYPE {name} gauge")
        own = [i for i, line in enumerate(lines) if line.split("{")[0].split(" ")[0] == name]
        assert own == list(range(start + 1, start + 1 + len(own))), name
    assert text.endswith("\n")
    # The textfile collector rejects explicit timestamps: one value per sample line.
    for line in lines:
        if not line.startswith("#"):
            assert len(line.rsplit("}", 1)[-1].split()) in (1, 2), line


def test_probed_dates_only_for_probed_certificates() -> None:
    families = parse(render_metrics(REPORT))
    cert = PROBED.facts.probe.cert  # type: ignore[union-attr]
    old = EXPIRED.facts.probe.cert  # type: ignore[union-attr]
    assert cert is not None and old is not None
    assert by_target(families[P + "cert_not_after_timestamp_seconds"]) == {
        "kube-apiserver": cert.not_after.timestamp(),
        "old": old.not_after.timestamp(),
    }
    assert by_target(families[P + "cert_not_before_timestamp_seconds"]) == {
        "kube-apiserver": cert.not_before.timestamp(),
        "old": old.not_before.timestamp(),
    }


def test_estimate_has_its_own_family() -> None:
    families = parse(render_metrics(REPORT))
    assert ESTIMATED.assessment.source == "process-start"
    estimate = ESTIMATED.assessment.not_after
    assert estimate == datetime(2026, 1, 1, tzinfo=timezone.utc) - timedelta(hours=1) + timedelta(
        days=1096
    )
    assert by_target(families[P + "cert_estimated_not_after_timestamp_seconds"]) == {
        "aggregated": estimate.timestamp()
    }


def test_seconds_left_from_either_source_negative_when_expired() -> None:
    families = parse(render_metrics(REPORT))
    left = by_target(families[P + "cert_seconds_left"])
    assert set(left) == {"kube-apiserver", "aggregated", "old"}
    assert left["kube-apiserver"] == PROBED.assessment.seconds_left
    assert left["aggregated"] == ESTIMATED.assessment.seconds_left
    assert left["old"] == -3 * 86400 - 3600


def test_probe_success_and_process_start() -> None:
    families = parse(render_metrics(REPORT))
    assert by_target(families[P + "probe_success"]) == {
        "kube-apiserver": 1.0,
        "aggregated": 0.0,
        "blind": 0.0,
        "old": 1.0,
    }
    starts = by_target(families[P + "process_start_time_seconds"])
    assert starts == {
        "kube-apiserver": STARTED.timestamp(),
        "aggregated": datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp(),
        "old": EXPIRED_START.timestamp(),
    }
    # The fraction of a second survives the text round trip.
    assert starts["kube-apiserver"] % 1 == 0.25


def test_state_is_one_hot_over_all_five_states() -> None:
    families = parse(render_metrics(REPORT))
    seen: Dict[str, Dict[str, float]] = {}
    for sample in families[P + "state"]:
        assert set(sample.labels) == {"target", "state"}
        seen.setdefault(sample.labels["target"], {})[sample.labels["state"]] = sample.value
    expected = {
        "kube-apiserver": PROBED.assessment.state,
        "aggregated": ESTIMATED.assessment.state,
        "blind": State.UNKNOWN,
        "old": State.EXPIRED,
    }
    assert PROBED.assessment.state is State.WARNING
    assert set(seen) == set(expected)
    for name, state in expected.items():
        assert seen[name] == {s.value: (1.0 if s is state else 0.0) for s in State}, name


def test_livez_check_is_one_hot_over_every_verdict() -> None:
    families = parse(render_metrics(REPORT))
    seen: Dict[str, Dict[str, float]] = {}
    for sample in families[P + "livez_check"]:
        assert set(sample.labels) == {"target", "result"}
        seen.setdefault(sample.labels["target"], {})[sample.labels["result"]] = sample.value
    verdicts = ["ok", "failed", "absent", "forbidden", "error", "not-checked"]
    current = {"kube-apiserver": "ok", "aggregated": "not-checked", "blind": "not-checked"}
    current["old"] = "failed"
    for name, verdict in current.items():
        assert seen[name] == {v: (1.0 if v == verdict else 0.0) for v in verdicts}, name


def test_last_check_and_build_info_are_unlabelled_by_target() -> None:
    families = parse(render_metrics(REPORT))
    (last,) = families[P + "last_check_timestamp_seconds"]
    assert last.labels == {}
    assert last.value == REPORT.checked_at.timestamp()
    assert last.value % 1 == 0.5
    (build,) = families[P + "build_info"]
    assert build.labels == {"version": __version__}
    assert build.value == 1.0


def test_no_targets_leaves_only_the_agent_families() -> None:
    report = CheckReport(checked_at=NOW, thresholds=THRESHOLDS, targets=())
    families = parse(render_metrics(report))
    assert set(families) == {P + "last_check_timestamp_seconds", P + "build_info"}


@pytest.mark.parametrize(
    "name",
    ['quo"te', "back\\slash", "new\nline", 'all\\"\n\\n', "ünïcödé ☃", "", "trailing\\"],
)
def test_odd_target_names_are_escaped(name: str) -> None:
    facts = TargetFacts(
        target=name,
        process=process(STARTED),
        discovery_error=None,
        probe=probe(cert_for(STARTED, timedelta(days=365))),
    )
    report = CheckReport(checked_at=NOW, thresholds=THRESHOLDS, targets=(report_for(facts),))
    text = render_metrics(report)
    families = parse(text)
    assert set(by_target(families[P + "cert_not_after_timestamp_seconds"])) == {name}
    assert {s.labels["target"] for s in families[P + "state"]} == {name}
    # One sample per line: an unescaped newline would split one.
    assert len([line for line in text.splitlines() if line.startswith(P + "state{")]) == 5
    if '"' in name:
        assert '\\"' in text
    if "\n" in name:
        assert "\\n" in text


def test_format_value() -> None:
    assert format_value(1.0) == "1"
    assert format_value(0.0) == "0"
    assert format_value(-259200.0) == "-259200"
    assert format_value(1764417600.25) == "1764417600.25"
    assert format_value(float("nan")) == "NaN"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert float(format_value(2.0**60)) == 2.0**60


def test_write_metrics_replaces_file_readable_by_all(tmp_path: Path) -> None:
    path = tmp_path / "kube_loopback_guard.prom"
    path.write_text("stale\n")
    write_metrics(str(path), REPORT)
    assert path.read_text() == render_metrics(REPORT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["kube_loopback_guard.prom"]


def test_write_metrics_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    # A real failure after the temp file is written: the target path is a
    # non-empty directory, so rename(2) fails with EISDIR, even for root.
    path = tmp_path / "kube_loopback_guard.prom"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(IsADirectoryError):
        write_metrics(str(path), REPORT)
    assert os.listdir(tmp_path) == ["kube_loopback_guard.prom"]


def reports_of_many_sizes(count: int) -> List[CheckReport]:
    """Return `count` different reports, with 1 to 12 targets, so their files differ in size."""
    reports = []
    for i in range(count):
        targets = []
        for j in range(1 + i % 12):
            started = STARTED + timedelta(seconds=i * 100 + j)
            facts = TargetFacts(
                target=f"apiserver-{j}",
                process=process(started, pid=1000 + j),
                discovery_error=None,
                probe=probe(cert_for(started, timedelta(days=365 + i))),
            )
            targets.append(report_for(facts))
        reports.append(
            CheckReport(
                checked_at=NOW + timedelta(seconds=i), thresholds=THRESHOLDS, targets=tuple(targets)
            )
        )
    return reports


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "kube_loopback_guard.prom"
    reports = reports_of_many_sizes(300)
    texts = [render_metrics(r) for r in reports]
    known: Set[str] = set(texts)
    assert len(known) == 300
    assert len({len(t) for t in texts}) > 12
    write_metrics(str(path), reports[0])
    done = threading.Event()
    sizes: List[int] = []
    bad: List[str] = []
    parsed: Set[str] = set()

    def reader() -> None:
        while not done.is_set():
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            if text not in known:
                bad.append(text[-200:])
            elif text not in parsed:
                # A complete version also parses (once each: the parser is slow).
                parse(text)
                parsed.add(text)
            sizes.append(len(text))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for report in reports:
            write_metrics(str(path), report)
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert bad == []
    assert len(sizes) > 10, "the reader barely ran; the test proved nothing"
    assert len(set(sizes)) > 1, "the reader saw only one version"
    assert path.read_text() == texts[-1]
    assert os.listdir(tmp_path) == ["kube_loopback_guard.prom"]


def restart_record(target: str, at: datetime, phase: str, outcome: Optional[str]) -> RestartRecord:
    return RestartRecord(
        target=target,
        at=at,
        phase=phase,
        outcome=outcome,
        old_not_after=None,
        new_not_after=None,
        detail="due",
    )


def outcome_of(families: Dict[str, List[Sample]], target: str) -> str:
    ones = [
        s.labels["outcome"]
        for s in families[P + "restart_last_outcome"]
        if s.labels["target"] == target and s.value == 1.0
    ]
    assert len(ones) == 1, ones
    return ones[0]


def test_restart_outcome_and_interval_for_the_alert_rules() -> None:
    name = PROBED.target.name
    assert outcome_of(parse(render_metrics(REPORT)), name) == "none"
    assert P + "interval_seconds" not in parse(render_metrics(REPORT))
    earlier = NOW - timedelta(days=2)
    cases = [
        ([restart_record(name, earlier, "done", "succeeded")], "succeeded"),
        ([restart_record(name, earlier, "done", "failed")], "failed"),
        # An intent never finished: the agent died between acting and verifying.
        ([restart_record(name, earlier, "intent", None)], "unverified"),
        # A later restart blocked before acting does not hide the failure.
        (
            [
                restart_record(name, earlier, "done", "failed"),
                restart_record(name, NOW, "done", "blocked"),
            ],
            "failed",
        ),
        # Another target's record is not this one's.
        ([restart_record("other", earlier, "done", "failed")], "none"),
    ]
    for records, expected in cases:
        families = parse(render_metrics(REPORT, timedelta(minutes=5), records))
        assert outcome_of(families, name) == expected, records
        (interval,) = families[P + "interval_seconds"]
        assert interval.value == 300.0
    families = parse(render_metrics(REPORT, None, cases[1][0]))
    (when,) = [s for s in families[P + "restart_last_timestamp_seconds"]]
    assert when.labels == {"target": name}
    assert when.value == earlier.timestamp()
