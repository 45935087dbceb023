"""Render a CheckReport as Prometheus metrics for node_exporter's textfile collector.

The collector reads every `*.prom` file in its directory on each scrape, at
any moment, so the file is replaced atomically (`agent.atomicfile`). Samples
carry no timestamps: the collector rejects them. A value that is not known
(no certificate, no process) has no sample, rather than a made-up 0.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from agent import __version__
from agent.model import LivezVerdict, Source, State
from agent.state.atomicfile import write_atomic
from agent.state.records import counts_for_min_interval

if TYPE_CHECKING:
    from agent.model import CheckReport, TargetReport
    from agent.state.records import RestartRecord

PREFIX = "kube_loopback_guard_"

# Every verdict gets a sample (1 for the current one, 0 for the others), as
# for the state: a series that vanishes is indistinguishable from a scrape gap.
LIVEZ_RESULTS: Tuple[LivezVerdict, ...] = (
    "ok",
    "failed",
    "absent",
    "forbidden",
    "error",
    "not-checked",
)

# The last restart per target that ran or was meant to run: "unverified" is an
# intent never finished (the agent died between acting and verifying), "none"
# no restart on record. KubeLoopbackRestartFailed fires on failed/unverified.
RESTART_OUTCOMES: Tuple[str, ...] = ("succeeded", "failed", "unverified", "none")

Labels = Sequence[Tuple[str, str]]
Sample = Tuple[Labels, float]


# Every family the agent writes and its HELP text (the man page lists them too).
HELP: Dict[str, str] = {
    "cert_not_after_timestamp_seconds": (
        "NotAfter of the loopback certificate the apiserver served to the last probe, "
        "seconds since the epoch; absent when that probe failed."
    ),
    "cert_not_before_timestamp_seconds": (
        "NotBefore of the loopback certificate the apiserver served to the last probe, "
        "seconds since the epoch; absent when that probe failed."
    ),
    "cert_estimated_not_after_timestamp_seconds": (
        "Estimated NotAfter of the loopback certificate when the probe failed: "
        "apiserver process start - 1h + assumed lifetime, seconds since the epoch."
    ),
    "cert_seconds_left": (
        "Seconds until the loopback certificate expires (negative: expired ago), "
        "from the probe or, when it failed, the estimate."
    ),
    "probe_success": "1 if the last probe read the loopback certificate, else 0.",
    "state": "1 for the target's current state, 0 for the others.",
    "process_start_time_seconds": (
        "Start time of the watched apiserver process (not of this agent), seconds since the epoch."
    ),
    "livez_check": (
        "1 for the verdict of the apiserver's own loopback-serving-certificate check "
        "(v1.36+, from /livez?verbose), 0 for the others."
    ),
    "restart_last_outcome": (
        "1 for the outcome of the target's last restart (succeeded, failed, unverified: "
        "the agent stopped before verifying, none: no restart on record), 0 for the others."
    ),
    "restart_last_timestamp_seconds": (
        "When the target's last restart was started, seconds since the epoch; "
        "absent when there is none on record."
    ),
    "interval_seconds": "The agent's check interval; the last check is stale after a few of these.",
    "last_check_timestamp_seconds": (
        "When the agent last checked its targets, seconds since the epoch."
    ),
    "build_info": "The agent's version, as a label; the value is always 1.",
}


def escape_label_value(value: str) -> str:
    """Given a label value, return it escaped for the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Given a sample value, return it as the exposition format spells it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        # Exactly integral: "1" reads better than "1.0", and is the same number.
        return str(int(value))
    return repr(value)


def _family(name: str, help_text: str, samples: List[Sample]) -> List[str]:
    """Given a family name (without prefix), its help and samples, return its lines;
    none when it has no samples."""
    if not samples:
        return []
    full = PREFIX + name
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
    for labels, value in samples:
        rendered = ",".join(f'{key}="{escape_label_value(text)}"' for key, text in labels)
        selector = f"{full}{{{rendered}}}" if rendered else full
        lines.append(f"{selector} {format_value(value)}")
    return lines


def _target(item: TargetReport) -> Tuple[Tuple[str, str]]:
    return (("target", item.target.name),)


def _sample(item: TargetReport, value: Optional[float]) -> List[Sample]:
    return [] if value is None else [(_target(item), value)]


def _epoch(moment: Optional[datetime]) -> Optional[float]:
    return None if moment is None else moment.timestamp()


def _probed_not_after(item: TargetReport) -> Optional[float]:
    probe = item.facts.probe
    return None if probe is None or probe.cert is None else probe.cert.not_after.timestamp()


def _probed_not_before(item: TargetReport) -> Optional[float]:
    probe = item.facts.probe
    return None if probe is None or probe.cert is None else probe.cert.not_before.timestamp()


def _estimated_not_after(item: TargetReport) -> Optional[float]:
    # Only the estimate: a probed date belongs in cert_not_after, and mixing the
    # two in one series would hide that the agent is guessing.
    a = item.assessment
    return _epoch(a.not_after) if a.source is Source.PROCESS_START else None


def _process_start(item: TargetReport) -> Optional[float]:
    process = item.facts.process
    return None if process is None else process.started_at.timestamp()


def _last_restarts(restarts: Sequence[RestartRecord]) -> Dict[str, RestartRecord]:
    """Given the restart history (oldest first), return each target's last
    record that ran or was meant to run (not one blocked before acting)."""
    last: Dict[str, RestartRecord] = {}
    for record in restarts:
        if counts_for_min_interval(record):
            last[record.target] = record
    return last


def _restart_outcome(record: Optional[RestartRecord]) -> str:
    if record is None:
        return "none"
    if record.phase == "intent":
        return "unverified"
    return record.outcome or "unverified"


def render_metrics(
    report: CheckReport,
    interval: Optional[timedelta] = None,
    restarts: Sequence[RestartRecord] = (),
) -> str:
    """Given a CheckReport, the check interval (None: not the daemon's) and
    the restart history, return the Prometheus text exposition of them."""
    targets = report.targets
    last = _last_restarts(restarts)
    families: List[Tuple[str, List[Sample]]] = [
        (
            "cert_not_after_timestamp_seconds",
            [s for t in targets for s in _sample(t, _probed_not_after(t))],
        ),
        (
            "cert_not_before_timestamp_seconds",
            [s for t in targets for s in _sample(t, _probed_not_before(t))],
        ),
        (
            "cert_estimated_not_after_timestamp_seconds",
            [s for t in targets for s in _sample(t, _estimated_not_after(t))],
        ),
        (
            "cert_seconds_left",
            [s for t in targets for s in _sample(t, t.assessment.seconds_left)],
        ),
        (
            "probe_success",
            [(_target(t), 1.0 if _probe_ok(t) else 0.0) for t in targets],
        ),
        (
            "state",
            [
                ((("target", t.target.name), ("state", state.value)), _one_hot(t, state))
                for t in targets
                for state in State
            ],
        ),
        (
            "process_start_time_seconds",
            [s for t in targets for s in _sample(t, _process_start(t))],
        ),
        (
            "livez_check",
            [
                (
                    (("target", t.target.name), ("result", result)),
                    1.0 if _livez(t) == result else 0.0,
                )
                for t in targets
                for result in LIVEZ_RESULTS
            ],
        ),
        (
            "restart_last_outcome",
            [
                (
                    (("target", t.target.name), ("outcome", outcome)),
                    1.0 if _restart_outcome(last.get(t.target.name)) == outcome else 0.0,
                )
                for t in targets
                for outcome in RESTART_OUTCOMES
            ],
        ),
        (
            "restart_last_timestamp_seconds",
            [
                (_target(t), last[t.target.name].at.timestamp())
                for t in targets
                if t.target.name in last
            ],
        ),
        (
            "interval_seconds",
            [] if interval is None else [((), interval.total_seconds())],
        ),
        (
            "last_check_timestamp_seconds",
            [((), report.checked_at.timestamp())],
        ),
        (
            "build_info",
            [((("version", __version__),), 1.0)],
        ),
    ]
    lines: List[str] = []
    for name, samples in families:
        lines.extend(_family(name, HELP[name], samples))
    return "\n".join(lines) + "\n"


def _probe_ok(item: TargetReport) -> bool:
    return item.facts.probe is not None and item.facts.probe.cert is not None


def _one_hot(item: TargetReport, state: State) -> float:
    return 1.0 if item.assessment.state is state else 0.0


def _livez(item: TargetReport) -> LivezVerdict:
    probe = item.facts.probe
    return "not-checked" if probe is None else probe.livez


def write_metrics(
    path: str,
    report: CheckReport,
    interval: Optional[timedelta] = None,
    restarts: Sequence[RestartRecord] = (),
) -> None:
    """Given a `.prom` path, a CheckReport, the interval and the restart
    history, atomically replace the file with their metrics.

    Raise OSError if the file cannot be written.
    """
    # No fsync: the file is rewritten every interval and a lost write after a
    # power cut costs nothing, while a control-plane disk is shared with etcd,
    # whose latency suffers from other writers' fsyncs. The rename still keeps
    # readers from ever seeing a partial file.
    text = render_metrics(report, interval, restarts)
    write_atomic(path, text.encode("utf-8"), mode=0o644, fsync=False)
