"""Render a CheckReport as Prometheus metrics for node_exporter's textfile collector.

The collector reads every `*.prom` file in its directory on each scrape, at
any moment, so the file is replaced atomically (`agent.atomicfile`). Samples
carry no timestamps: the collector rejects them. A value that is not known
(no certificate, no process) has no sample, rather than a made-up 0.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from agent import __version__
from agent.model import LivezVerdict, Source, State
from agent.state.atomicfile import write_atomic

if TYPE_CHECKING:
    from agent.model import CheckReport, TargetReport

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

Labels = Sequence[Tuple[str, str]]
Sample = Tuple[Labels, float]


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


def render_metrics(report: CheckReport) -> str:
    """Given a CheckReport, return the Prometheus text exposition of it."""
    targets = report.targets
    families: List[Tuple[str, str, List[Sample]]] = [
        (
            "cert_not_after_timestamp_seconds",
            "NotAfter of the loopback certificate the apiserver served to the last probe, "
            "seconds since the epoch; absent when that probe failed.",
            [s for t in targets for s in _sample(t, _probed_not_after(t))],
        ),
        (
            "cert_not_before_timestamp_seconds",
            "NotBefore of the loopback certificate the apiserver served to the last probe, "
            "seconds since the epoch; absent when that probe failed.",
            [s for t in targets for s in _sample(t, _probed_not_before(t))],
        ),
        (
            "cert_estimated_not_after_timestamp_seconds",
            "Estimated NotAfter of the loopback certificate when the probe failed: "
            "apiserver process start - 1h + assumed lifetime, seconds since the epoch.",
            [s for t in targets for s in _sample(t, _estimated_not_after(t))],
        ),
        (
            "cert_seconds_left",
            "Seconds until the loopback certificate expires (negative: expired ago), "
            "from the probe or, when it failed, the estimate.",
            [s for t in targets for s in _sample(t, t.assessment.seconds_left)],
        ),
        (
            "probe_success",
            "1 if the last probe read the loopback certificate, else 0.",
            [(_target(t), 1.0 if _probe_ok(t) else 0.0) for t in targets],
        ),
        (
            "state",
            "1 for the target's current state, 0 for the others.",
            [
                ((("target", t.target.name), ("state", state.value)), _one_hot(t, state))
                for t in targets
                for state in State
            ],
        ),
        (
            "process_start_time_seconds",
            "Start time of the watched apiserver process (not of this agent), "
            "seconds since the epoch.",
            [s for t in targets for s in _sample(t, _process_start(t))],
        ),
        (
            "livez_check",
            "1 for the verdict of the apiserver's own loopback-serving-certificate check "
            "(v1.36+, from /livez?verbose), 0 for the others.",
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
            "last_check_timestamp_seconds",
            "When the agent last checked its targets, seconds since the epoch.",
            [((), report.checked_at.timestamp())],
        ),
        (
            "build_info",
            "The agent's version, as a label; the value is always 1.",
            [((("version", __version__),), 1.0)],
        ),
    ]
    lines: List[str] = []
    for name, help_text, samples in families:
        lines.extend(_family(name, help_text, samples))
    return "\n".join(lines) + "\n"


def _probe_ok(item: TargetReport) -> bool:
    return item.facts.probe is not None and item.facts.probe.cert is not None


def _one_hot(item: TargetReport, state: State) -> float:
    return 1.0 if item.assessment.state is state else 0.0


def _livez(item: TargetReport) -> LivezVerdict:
    probe = item.facts.probe
    return "not-checked" if probe is None else probe.livez


def write_metrics(path: str, report: CheckReport) -> None:
    """Given a `.prom` path and a CheckReport, atomically replace the file with its metrics.

    Raise OSError if the file cannot be written.
    """
    # No fsync: the file is rewritten every interval and a lost write after a
    # power cut costs nothing, while a control-plane disk is shared with etcd,
    # whose latency suffers from other writers' fsyncs. The rename still keeps
    # readers from ever seeing a partial file.
    write_atomic(path, render_metrics(report).encode("utf-8"), mode=0o644, fsync=False)
