"""Judge one target's facts: how long until its loopback certificate expires.

Pure: facts + thresholds + assumed lifetime + now in, an Assessment out. The
clock is read by the caller, once, and passed in as `now`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import List, Optional

from agent.config.durations import format_days
from agent.config.types import Thresholds
from agent.model import (
    BACKDATE,
    CROSS_CHECK_TOLERANCE,
    ApiserverProcess,
    Assessment,
    LoopbackCert,
    Source,
    State,
    TargetFacts,
)
from agent.text import one_line
from agent.timefmt import format_rfc3339, format_utc_minutes


def state_for(seconds_left: float, thresholds: Thresholds) -> State:
    """Given seconds left and thresholds, return the state by time alone."""
    if seconds_left <= 0:
        return State.EXPIRED
    if seconds_left < thresholds.critical.total_seconds():
        return State.CRITICAL
    if seconds_left < thresholds.warning.total_seconds():
        return State.WARNING
    return State.OK


def _at_least(state: State, floor: State) -> State:
    return state if state.severity >= floor.severity else floor


def _when(moment: datetime) -> str:
    return format_utc_minutes(moment)


def _expiry_phrase(not_after: datetime, seconds_left: float) -> str:
    if seconds_left <= 0:
        return f"expired {_when(not_after)} ({format_days(-seconds_left)} days ago)"
    return f"expires {_when(not_after)} ({format_days(seconds_left)} days left)"


def _probe_failure(facts: TargetFacts) -> Optional[str]:
    if facts.probe is None:
        return None
    if facts.probe.error is None:
        return None
    return one_line(
        f"probe of {facts.probe.host}:{facts.probe.port} failed: {facts.probe.error}", limit=None
    )


def assess(
    facts: TargetFacts,
    thresholds: Thresholds,
    assumed_lifetime: timedelta,
    now: datetime,
) -> Assessment:
    """Given a target's facts, thresholds, the lifetime to assume without a probe,
    and now, return the Assessment with its reason."""
    probe = facts.probe
    if probe is not None and probe.cert is not None:
        return _from_certificate(facts, probe.cert, probe.livez, thresholds, now)
    if facts.process is not None:
        return _from_process_start(facts, facts.process, thresholds, assumed_lifetime, now)
    reasons = [one_line(r, limit=None) for r in (facts.discovery_error, _probe_failure(facts)) if r]
    error = "; ".join(reasons) or "nothing to check: no process to find and no probe made"
    return Assessment(
        target=facts.target,
        state=State.UNKNOWN,
        source=Source.NONE,
        not_before=None,
        not_after=None,
        seconds_left=None,
        lifetime=None,
        summary=error,
        notes=(),
        error=error,
    )


def _from_certificate(
    facts: TargetFacts,
    cert: LoopbackCert,
    livez: str,
    thresholds: Thresholds,
    now: datetime,
) -> Assessment:
    seconds_left = (cert.not_after - now).total_seconds()
    state = state_for(seconds_left, thresholds)
    summary = "loopback certificate " + _expiry_phrase(cert.not_after, seconds_left)
    notes: List[str] = []
    if now < cert.not_before:
        # Self-calls fail ("expired or not yet valid") exactly as after expiry.
        state = _at_least(state, State.CRITICAL)
        summary = f"loopback certificate not valid before {_when(cert.not_before)} (clock skew?)"
        notes.append("certificate is not yet valid: the apiserver's self-calls fail until then")
    if livez == "failed":
        state = _at_least(state, State.CRITICAL)
        notes.append("upstream /livez check loopback-serving-certificate failed")
    if facts.process is not None:
        expected = facts.process.started_at - BACKDATE
        if abs(cert.not_before - expected) > CROSS_CHECK_TOLERANCE:
            notes.append(
                f"certificate not_before {format_rfc3339(cert.not_before)} is not the "
                f"process start minus 1h ({format_rfc3339(expected)}): the probe may reach "
                "another apiserver than PID "
                f"{facts.process.pid}; the probed certificate wins"
            )
    return Assessment(
        target=facts.target,
        state=state,
        source=Source.PROBE,
        not_before=cert.not_before,
        not_after=cert.not_after,
        seconds_left=seconds_left,
        lifetime=cert.lifetime,
        summary=summary,
        notes=tuple(notes),
        error=None,
    )


def _from_process_start(
    facts: TargetFacts,
    process: ApiserverProcess,
    thresholds: Thresholds,
    lifetime: timedelta,
    now: datetime,
) -> Assessment:
    not_before = process.started_at - BACKDATE
    not_after = not_before + lifetime
    seconds_left = (not_after - now).total_seconds()
    # A blind probe must never look healthy: the operator has to fix it.
    state = _at_least(state_for(seconds_left, thresholds), State.WARNING)
    # Without a probe, discovery says why (a pod listening on its own loopback only).
    failure = _probe_failure(facts) or facts.discovery_error or "no probe made"
    summary = f"{failure}; estimated from process start: loopback certificate " + _expiry_phrase(
        not_after, seconds_left
    )
    return Assessment(
        target=facts.target,
        state=state,
        source=Source.PROCESS_START,
        not_before=not_before,
        not_after=not_after,
        seconds_left=seconds_left,
        lifetime=lifetime,
        summary=summary,
        notes=(f"estimate assumes a {lifetime.days}-day certificate lifetime",),
        error=failure,
    )
