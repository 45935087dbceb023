"""The journal's vocabulary: each kind of event, its fixed MESSAGE_ID and priority.

MESSAGE_IDs never change once released: operators alert on them
(`journalctl MESSAGE_ID=…`) and the catalog in
systemd/kube-loopback-guard.catalog explains each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Dict, List, Mapping, Optional, Tuple

from agent.model import State, TargetReport
from agent.report.journal import Journal
from agent.timefmt import format_rfc3339


class EventKind(str, Enum):
    STATE_CHANGED = "state-changed"
    REMINDER = "reminder"
    PROBE_FAILED = "probe-failed"
    CONFIG_RELOADED = "config-reloaded"
    CONFIG_REJECTED = "config-rejected"
    AGENT_STARTED = "agent-started"
    AGENT_STOPPING = "agent-stopping"
    # Added by the restart work; IDs reserved here so they stay stable.
    RESTART_PLANNED = "restart-planned"
    RESTART_BLOCKED = "restart-blocked"
    RESTART_STARTED = "restart-started"
    RESTART_SUCCEEDED = "restart-succeeded"
    RESTART_FAILED = "restart-failed"


MESSAGE_IDS = {
    EventKind.STATE_CHANGED: "eb35f3f875174c1898025bddf912aeca",
    EventKind.REMINDER: "a89cc4a54ea8427a8bbe79a37c6cbfa4",
    EventKind.PROBE_FAILED: "14f65431f3624044995fe8cdb3486d6f",
    EventKind.CONFIG_RELOADED: "19101d2c79674599919da358cf7ae4f2",
    EventKind.CONFIG_REJECTED: "f7bb3f444aba4c259876118e4b051ec4",
    EventKind.AGENT_STARTED: "ad42f2b5a5b346c89b30f239477ee01e",
    EventKind.AGENT_STOPPING: "d85511bb93b345349ae3769b5bb39c00",
    EventKind.RESTART_PLANNED: "81a562d7adc1452bbdfc320d908edb08",
    EventKind.RESTART_BLOCKED: "9e88ed220ffc4710b7f4ca6354d8116b",
    EventKind.RESTART_STARTED: "3ba148d153874f11be028da893cf26f2",
    EventKind.RESTART_SUCCEEDED: "7c06fb9d9bce4bfca086d3292f0d0184",
    EventKind.RESTART_FAILED: "88760a11520b4fe48c7710a196a18ab7",
}

# Every field the agent's records may carry besides MESSAGE, PRIORITY,
# SYSLOG_IDENTIFIER and MESSAGE_ID, with its meaning (the man page's JOURNAL
# section; a test finds every field the code sends and looks it up here).
JOURNAL_FIELDS: Dict[str, str] = {
    "TARGET": "the target's name ([[targets]] name)",
    "STATE": "ok, warning, critical, expired or unknown",
    "PREVIOUS_STATE": "the state before a change (none at the first check)",
    "SOURCE": "where the expiry came from: probe, process-start (an estimate) or none",
    "CERT_NOT_AFTER": "the certificate's NotAfter, RFC 3339 UTC",
    "CERT_NOT_BEFORE": "the certificate's NotBefore, RFC 3339 UTC",
    "CERT_SECONDS_LEFT": "seconds until NotAfter (negative once expired)",
    "CERT_SHA256": "SHA-256 fingerprint of the served loopback certificate",
    "PROCESS_PID": "PID of the apiserver process",
    "PROCESS_START": "start time of the apiserver process, RFC 3339 UTC",
    "PROBE_ENDPOINT": "host:port the probe connected to",
    "PROBE_ERROR": "why the probe could not read the certificate",
    "LIVEZ": "the apiserver's own loopback-serving-certificate check: ok, failed, absent, "
    "forbidden, error or not-checked",
    "CONFIG_FILE": "the configuration file (re)loaded or rejected",
    "RESTART_REASON": "the restart decision's reason code (see plan)",
    "RESTART_AT": "when the next window opens, RFC 3339 UTC",
    "RESTART_METHOD": "how the apiserver is restarted ([restart] method)",
    "RESTART_OUTCOME": "succeeded or failed (verified), or why nothing was done",
    "NEW_CERT_NOT_AFTER": "NotAfter of the certificate after the restart, RFC 3339 UTC",
    "DRY_RUN": "1 when [restart] dry_run (or restart --dry-run) kept the agent from acting",
    "KLG_TRUNCATED": '1 when a value was cut to fit the journal (it ends in "[truncated]")',
}

# syslog priorities, as journald's PRIORITY= field wants them.
PRIORITY_CRIT = 2
PRIORITY_ERR = 3
PRIORITY_WARNING = 4
PRIORITY_NOTICE = 5
PRIORITY_INFO = 6

REMINDER_EVERY = timedelta(days=1)

_STATE_PRIORITY = {
    State.OK: PRIORITY_INFO,
    State.WARNING: PRIORITY_WARNING,
    State.CRITICAL: PRIORITY_CRIT,
    State.EXPIRED: PRIORITY_CRIT,
    State.UNKNOWN: PRIORITY_ERR,
}


@dataclass(frozen=True)
class Event:
    """One journal record: what happened, how bad, and the structured fields."""

    kind: EventKind
    priority: int
    message: str
    fields: Mapping[str, object]

    @property
    def message_id(self) -> str:
        return MESSAGE_IDS[self.kind]

    def send(self, journal: Journal) -> None:
        journal.send(self.message, self.priority, {"MESSAGE_ID": self.message_id, **self.fields})


def send_event(
    journal: Journal, kind: EventKind, priority: int, message: str, **fields: object
) -> None:
    """Send one record of a kind, with its MESSAGE_ID, to the journal."""
    Event(kind, priority, message, fields).send(journal)


def priority_for(state: State) -> int:
    """ok=info, warning=warning, critical/expired=crit, unknown=err."""
    return _STATE_PRIORITY[state]


def _stamp(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else format_rfc3339(moment)


def target_fields(report: TargetReport) -> Dict[str, object]:
    """Given a target's check, return the journal fields that describe it."""
    a = report.assessment
    probe = report.facts.probe
    cert = probe.cert if probe is not None else None
    process = report.facts.process
    fields: Dict[str, object] = {
        "TARGET": report.target.name,
        "STATE": a.state.value,
        "SOURCE": a.source.value,
        "CERT_NOT_AFTER": _stamp(a.not_after),
        "CERT_NOT_BEFORE": _stamp(a.not_before),
        "CERT_SECONDS_LEFT": None if a.seconds_left is None else int(a.seconds_left),
        "CERT_SHA256": cert.sha256 if cert is not None else None,
        "PROCESS_PID": process.pid if process is not None else None,
        "PROCESS_START": _stamp(process.started_at) if process is not None else None,
        "PROBE_ERROR": a.error,
    }
    if probe is not None:
        fields["PROBE_ENDPOINT"] = f"{probe.host}:{probe.port}"
        fields["LIVEZ"] = probe.livez
    return fields


@dataclass(frozen=True)
class Alerted:
    """The last state the journal was told about for a target, and when."""

    state: Optional[str]
    at: Optional[datetime]


def target_events(
    report: TargetReport,
    previous_state: Optional[str],
    previous_probe_error: Optional[str],
    alerted: Alerted,
    now: datetime,
) -> Tuple[List[Event], Alerted]:
    """Given a target's check, what the previous check saw, the last alert and
    now, return the records to send and the new last alert.

    A record on change, plus a reminder at most once a day while a state other
    than ok stands; never one record per interval.
    """
    a = report.assessment
    fields = target_fields(report)
    name = report.target.name
    events: List[Event] = []
    probe_error = report.facts.probe.error if report.facts.probe is not None else None
    if probe_error is not None and previous_probe_error is None:
        events.append(
            Event(
                EventKind.PROBE_FAILED,
                PRIORITY_ERR,
                f"{name}: probe failed: {a.error or probe_error}",
                fields,
            )
        )
    if previous_state != a.state.value or alerted.state != a.state.value:
        before = previous_state or "none"
        events.append(
            Event(
                EventKind.STATE_CHANGED,
                priority_for(a.state),
                f"{name}: {before.upper()} -> {a.state.name}: {a.summary}",
                {**fields, "PREVIOUS_STATE": before},
            )
        )
        return events, Alerted(a.state.value, now)
    if a.state is not State.OK and (alerted.at is None or now - alerted.at >= REMINDER_EVERY):
        events.append(
            Event(
                EventKind.REMINDER,
                priority_for(a.state),
                f"{name}: still {a.state.name}: {a.summary}",
                fields,
            )
        )
        return events, Alerted(a.state.value, now)
    return events, alerted
