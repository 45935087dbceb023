"""One check of every target: discover → probe → assess.

This is the seam between the I/O edges (`agent.discover`, `agent.probe`) and
the pure judgement (`agent.assess`). The daemon and the `check` command both
run it; both pass the clock in.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Callable, Optional, Sequence, Tuple

from agent.config.types import TargetConfig, Thresholds
from agent.judge.assess import assess
from agent.model import (
    DEFAULT_LIFETIME,
    DEFAULT_SECURE_PORT,
    ApiserverProcess,
    CheckReport,
    ProbeResult,
    TargetFacts,
    TargetReport,
)
from agent.observe.discover import ProcessFinder
from agent.text import one_line

ProbeFunction = Callable[[str, int, str, float], ProbeResult]
# Given a target name and its process, the lifetime an earlier probe of that
# same process showed, if any (the daemon remembers it; `check` does not).
LearnedLifetime = Callable[[str, Optional[ApiserverProcess]], Optional[timedelta]]


def nothing_learned(target: str, process: Optional[ApiserverProcess]) -> Optional[timedelta]:
    return None


def resolve_endpoint(target: TargetConfig, process: Optional[ApiserverProcess]) -> Tuple[str, int]:
    """Given a target and its process (if found), return the host and port to probe.

    The configured values win; otherwise the process's --bind-address (a
    wildcard means loopback works) and --secure-port, else 127.0.0.1:6443.
    """
    host = target.host
    if not host:
        host = "127.0.0.1"
        bind = process.bind_address if process is not None else None
        if bind:
            try:
                if not ipaddress.ip_address(bind.strip("[]")).is_unspecified:
                    host = bind.strip("[]")
            except ValueError:
                host = bind
    port = target.port
    if not port:
        found = process.secure_port if process is not None else None
        port = found or DEFAULT_SECURE_PORT
    return host, port


def assumed_lifetime(target: TargetConfig, learned: Optional[timedelta]) -> timedelta:
    """Given a target and a lifetime learned from an earlier probe of the same
    process (if any), return the lifetime to assume when the probe fails."""
    if target.lifetime is not None:
        return target.lifetime
    return learned if learned is not None else DEFAULT_LIFETIME


def gather_facts(target: TargetConfig, finder: ProcessFinder, probe: ProbeFunction) -> TargetFacts:
    """Given a target, find its process and probe it; return what was seen."""
    process: Optional[ApiserverProcess] = None
    discovery_error: Optional[str] = None
    if target.process_name:
        discovery = finder.find(target.process_name, target.port or DEFAULT_SECURE_PORT)
        process, discovery_error = discovery.process, discovery.error
    host, port = resolve_endpoint(target, process)
    result = probe(host, port, target.server_name, target.timeout.total_seconds())
    return TargetFacts(
        target=target.name, process=process, discovery_error=discovery_error, probe=result
    )


def run_check(
    targets: Sequence[TargetConfig],
    thresholds: Thresholds,
    finder: ProcessFinder,
    probe: ProbeFunction,
    clock: Callable[[], datetime],
    learned: LearnedLifetime = nothing_learned,
) -> CheckReport:
    """Check every target; the clock is read once per target, after its probe."""
    reports = []
    for target in targets:
        try:
            facts = gather_facts(target, finder, probe)
        except Exception as exc:
            # Whatever a peer or /proc made the probe or discovery trip over is
            # this target's UNKNOWN, never a crash that hides the other targets.
            facts = TargetFacts(
                target=target.name,
                process=None,
                discovery_error=None,
                probe=ProbeResult(
                    host=target.host,
                    port=target.port,
                    server_name=target.server_name,
                    cert=None,
                    livez="not-checked",
                    error=f"check failed: {type(exc).__name__}: {one_line(str(exc))}",
                ),
            )
        lifetime = assumed_lifetime(target, learned(target.name, facts.process))
        assessment = assess(facts, thresholds, lifetime, clock())
        reports.append(TargetReport(target=target, facts=facts, assessment=assessment))
    return CheckReport(checked_at=clock(), thresholds=thresholds, targets=tuple(reports))
