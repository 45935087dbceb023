"""The shipped Prometheus alert rules: promtool's own unit tests of them (every
alert firing and not firing, packaging/prometheus/*.rules.test.yml), every
metric they read is one the agent writes, and the PrometheusRule manifest
holds the same rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import apiserver_process, loopback_cert, probe_result, target_config

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import CheckReport, TargetFacts, TargetReport
from agent.report.metrics import PREFIX, render_metrics
from agent.state.records import RestartRecord

HERE = Path(__file__).resolve().parents[2] / "packaging" / "prometheus"
RULES = HERE / "kube-loopback-guard.rules.yml"
RULE_TESTS = HERE / "kube-loopback-guard.rules.test.yml"
MANIFEST = HERE / "kube-loopback-guard.prometheusrule.yaml"
ALERTS = [
    "KubeLoopbackCertificateWarning",
    "KubeLoopbackCertificateCritical",
    "KubeLoopbackProbeFailing",
    "KubeLoopbackAgentAbsent",
    "KubeLoopbackRestartFailed",
]

promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)"
)


def test_the_alerts_the_runbook_names() -> None:
    assert re.findall(r"(?m)^\s+- alert: (\S+)$", RULES.read_text()) == ALERTS


@promtool
def test_promtool_checks_and_tests_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(HERE),
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for alert in ALERTS:  # each alert is tested, not only mentioned
        assert f"alertname: {alert}" in RULE_TESTS.read_text()


def test_every_metric_the_rules_read_is_written_by_the_agent() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    start = now - timedelta(days=300)
    facts = TargetFacts(
        target="kube-apiserver",
        process=apiserver_process(start),
        discovery_error=None,
        probe=probe_result(loopback_cert(start, timedelta(days=365))),
    )
    thresholds = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
    report = CheckReport(
        checked_at=now,
        thresholds=thresholds,
        targets=(
            TargetReport(
                target_config(facts.target),
                facts,
                assess(facts, thresholds, timedelta(days=365), now),
            ),
        ),
    )
    restart = RestartRecord("kube-apiserver", now, "intent", None, None, None, "due")
    text = render_metrics(report, timedelta(minutes=5), (restart,))
    written = set(re.findall(r"(?m)^(" + PREFIX + r"\w+)", text))
    read = set(re.findall(PREFIX + r"\w+", RULES.read_text()))
    assert read, "the rules read no metric of ours"
    assert read <= written, read - written


def test_the_prometheusrule_holds_the_same_rules() -> None:
    rules = [line for line in RULES.read_text().splitlines() if not line.startswith("#")]
    manifest = MANIFEST.read_text()
    assert "kind: PrometheusRule\n" in manifest
    spec = manifest.split("\nspec:\n", 1)[1]
    assert spec.splitlines() == [f"  {line}" if line else line for line in rules]
