"""Render a CheckReport for people and programs: monitoring-plugin text and JSON.

The plugin text follows Nagios/Icinga conventions (as check_ssl_cert does):
one status line with perfdata, then one detail line per target.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional

from agent.config.durations import format_days
from agent.model import DEFAULT_SECURE_PORT, CheckReport, Source, State, TargetReport
from agent.text import one_line
from agent.timefmt import format_rfc3339, format_utc_date, format_utc_minutes, format_utc_seconds

# Monitoring-plugin exit codes.
EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_UNKNOWN = 3

PLUGIN_EXIT = {
    State.OK: EXIT_OK,
    State.WARNING: EXIT_WARNING,
    State.CRITICAL: EXIT_CRITICAL,
    State.EXPIRED: EXIT_CRITICAL,
    State.UNKNOWN: EXIT_UNKNOWN,
}


def rfc3339(moment: Optional[datetime]) -> Optional[str]:
    """Given an aware datetime, return RFC 3339 UTC with a Z, whole seconds."""
    if moment is None:
        return None
    return format_rfc3339(moment)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}"


def perfdata(report: CheckReport) -> str:
    """Return perfdata: days left per target, with the warning and critical days."""
    warn = _days(report.thresholds.warning.total_seconds())
    crit = _days(report.thresholds.critical.total_seconds())
    fields = []
    for item in report.targets:
        left = item.assessment.seconds_left
        value = "U" if left is None else format_days(left)
        fields.append(f"'{item.target.name}_days_left'={value};{warn};{crit}")
    return " ".join(fields)


# Beyond this many targets, STATUS= and the plugin's status line count
# states and name only the targets that are not OK (a node hosting fifty
# tenant apiservers must not print fifty phrases on one line).
SUMMARY_ABOVE = 3
# How many not-OK targets a summary names before "and N more".
_SUMMARY_NAMES = 5


def many_summary(report: CheckReport) -> str:
    """Given a report, return "52 apiservers: 51 OK, 1 WARNING (tenant-a/x, 41 d)":
    counts per state, worst first, naming the targets that are not OK."""
    counts: Dict[State, int] = {}
    for item in report.targets:
        counts[item.assessment.state] = counts.get(item.assessment.state, 0) + 1
    ranked = sorted(counts, key=lambda s: -s.severity)
    parts = []
    for state in ranked:
        part = f"{counts[state]} {state.name}"
        if state is not State.OK:
            items = [t for t in report.targets if t.assessment.state is state]
            named = [_short(t) for t in items[:_SUMMARY_NAMES]]
            more = len(items) - len(named)
            part += " (" + "; ".join(named) + (f"; and {more} more" if more else "") + ")"
        parts.append(part)
    return f"{len(report.targets)} apiservers: " + ", ".join(parts)


def _short(item: TargetReport) -> str:
    """Given a target, return "name, 41 d" (or "name, reason" without a date)."""
    left = item.assessment.seconds_left
    name = one_line(item.target.name)
    if left is None:
        return f"{name}, {one_line(item.assessment.error or item.assessment.summary)}"
    return f"{name}, {max(0, int(left // 86400))} d"


def status_line(report: CheckReport) -> str:
    """Return `KUBE-LOOPBACK-GUARD <STATE> - <summary> | <perfdata>`."""
    ranked = sorted(report.targets, key=lambda t: -t.assessment.state.severity)
    summary = "; ".join(f"{t.target.name}: {one_line(t.assessment.summary, None)}" for t in ranked)
    if len(report.targets) > SUMMARY_ABOVE:
        summary = many_summary(report)
    if not summary:
        summary = "no targets"
    return f"KUBE-LOOPBACK-GUARD {report.state.name} - {summary} | {perfdata(report)}"


def unknown_line(reason: str) -> str:
    """Given why there is no result (a bad config, a usage error), return the
    plugin's status line for it: UNKNOWN, on one line, with empty perfdata."""
    return f"KUBE-LOOPBACK-GUARD UNKNOWN - {one_line(reason)}\n"


def _utc_and_local(moment: datetime) -> str:
    """Given an aware datetime, return it in UTC, then in local time unless
    the local zone is UTC (the same text twice says nothing)."""
    utc = format_utc_seconds(moment)
    try:
        local = moment.astimezone()
    except (OverflowError, ValueError):
        # Year 1 or 9999 has no local time on the far side of UTC.
        return utc
    if local.utcoffset() == timedelta(0):
        return utc
    return f"{utc} ({local.year:04d}-{local:%m-%d %H:%M:%S %Z})"


def detail_line(item: TargetReport) -> str:
    """Return one human line about a target, with its notes indented below."""
    a = item.assessment
    parts = [f"{item.target.name}: {a.state.name}"]
    if a.not_after is not None and a.seconds_left is not None:
        verb = "expired" if a.seconds_left <= 0 else "expires"
        if a.source is Source.PROCESS_START:
            verb = "estimated expiry"
        parts.append(
            f"{verb} {_utc_and_local(a.not_after)}, {format_days(a.seconds_left)} days left"
        )
    parts.append(f"source {a.source}")
    probe = item.facts.probe
    if probe is not None:
        parts.append(f"probed {one_line(probe.host)}:{probe.port} (SNI {probe.server_name})")
    process = item.facts.process
    if process is not None:
        parts.append(f"PID {process.pid} started {format_utc_seconds(process.started_at)}")
    elif item.facts.discovery_error:
        parts.append(one_line(item.facts.discovery_error, None))
    if probe is not None:
        parts.append(f"upstream livez check {probe.livez}")
    if a.error and a.source is not Source.NONE:
        parts.append(f"error: {one_line(a.error, None)}")
    lines = [", ".join(parts)]
    lines.extend(f"  note: {one_line(note, None)}" for note in a.notes)
    return "\n".join(lines)


def render_text(report: CheckReport) -> str:
    return "\n".join([status_line(report), *(detail_line(t) for t in report.targets)]) + "\n"


def target_json(item: TargetReport) -> Dict[str, Any]:
    a = item.assessment
    probe = item.facts.probe
    cert = probe.cert if probe is not None else None
    process = item.facts.process
    return {
        "name": item.target.name,
        "kind": item.target.kind,
        "state": a.state.value,
        "source": a.source.value,
        "summary": a.summary,
        "not_before": rfc3339(a.not_before),
        "not_after": rfc3339(a.not_after),
        "seconds_left": None if a.seconds_left is None else int(a.seconds_left),
        "lifetime_seconds": None if a.lifetime is None else int(a.lifetime.total_seconds()),
        "subject": cert.subject if cert else None,
        "issuer": cert.issuer if cert else None,
        "serial": cert.serial if cert else None,
        "sha256": cert.sha256 if cert else None,
        "endpoint": None
        if probe is None
        else {"host": probe.host, "port": probe.port, "server_name": probe.server_name},
        "process": None
        if process is None
        else {
            "pid": process.pid,
            "started_at": rfc3339(process.started_at),
            "port": process.secure_port or DEFAULT_SECURE_PORT,
            "bind_address": process.bind_address,
        },
        "livez": probe.livez if probe is not None else "not-checked",
        "error": a.error,
        "notes": list(a.notes),
    }


def report_json(report: CheckReport) -> Dict[str, Any]:
    return {
        "state": report.state.value,
        "checked_at": rfc3339(report.checked_at),
        "targets": [target_json(t) for t in report.targets],
    }


def render_json(report: CheckReport) -> str:
    import json

    return json.dumps(report_json(report), indent=2) + "\n"


def exit_code(report: CheckReport) -> int:
    return PLUGIN_EXIT[report.state]


def target_status(item: TargetReport) -> str:
    """One short phrase for `systemctl status`, e.g.
    "kube-apiserver: WARNING, loopback cert expires 2027-05-10 (41 days)"."""
    a = item.assessment
    head = f"{item.target.name}: {a.state.name}"
    if a.not_after is None or a.seconds_left is None:
        return f"{head}, {a.summary}"
    days = int(a.seconds_left // 86400) if a.seconds_left > 0 else 0
    if a.source is Source.PROCESS_START:
        return (
            f"{head}, loopback cert expires ~{format_utc_date(a.not_after)} "
            f"({days} days, estimated from process start: {a.error})"
        )
    if a.seconds_left <= 0:
        return f"{head}, loopback cert expired {format_utc_minutes(a.not_after)}"
    return f"{head}, loopback cert expires {format_utc_date(a.not_after)} ({days} days)"


def systemd_status(report: CheckReport, restart: Optional[Mapping[str, str]] = None) -> str:
    """The STATUS= line: every target's phrase, the worst first, each with the
    restart part when there is one ("…, restart planned Sun 02:00 Europe/Berlin")."""
    restart = restart or {}
    if len(report.targets) > SUMMARY_ABOVE:
        plans = [f"{name}: {text}" for name, text in sorted(restart.items()) if text]
        return "; ".join([many_summary(report), *plans[:_SUMMARY_NAMES]])
    ranked = sorted(report.targets, key=lambda t: -t.assessment.state.severity)
    phrases = []
    for item in ranked:
        extra = restart.get(item.target.name, "")
        phrases.append(target_status(item) + (f", {extra}" if extra else ""))
    return "; ".join(phrases) or "no targets"
