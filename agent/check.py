"""One check of every target: discover → probe → assess.

This is the seam between the I/O edges (`agent.observe.discover`,
`agent.observe.probe`) and the pure judgement (`agent.judge.assess`). The
daemon and the `check` command both run it; both pass the clock in.

A target that pins nothing (kind "auto", the default) stands for every
apiserver on the node, each checked as a target of its own under a stable
name. Probes run in parallel (at most MAX_PARALLEL_PROBES at once) under one
overall deadline, so a node hosting fifty tenant apiservers is checked in
about one probe's time; one target's failure stays that target's.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Callable, List, Optional, Sequence, Tuple

from agent.config.types import DEFAULT_PROCESS_NAME, TargetConfig, Thresholds
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
from agent.observe.discover import Discovery, ProcessFinder
from agent.observe.shapes import KIND_HOSTS, KIND_PORT, KIND_PROCESS, probe_hosts, process_names
from agent.record import replace
from agent.text import one_line

ProbeFunction = Callable[[str, int, str, float], ProbeResult]
# Given a target name and its process, the lifetime an earlier probe of that
# same process showed, if any (the daemon remembers it; `check` does not).
LearnedLifetime = Callable[[str, Optional[ApiserverProcess]], Optional[timedelta]]

# Enough to check fifty tenant apiservers in about one probe's time
# without opening hundreds of sockets at once.
MAX_PARALLEL_PROBES = 64
# Below this much time left, a fallback address is not worth a connect.
_MIN_FALLBACK_SECONDS = 0.05


def nothing_learned(target: str, process: Optional[ApiserverProcess]) -> Optional[timedelta]:
    return None


def probe_addresses(
    target: TargetConfig, process: Optional[ApiserverProcess]
) -> Tuple[Tuple[str, ...], int]:
    """Given a target and its process (if found), return the addresses to
    probe, in order, and the port.

    The configured values win; otherwise the process's shape says (its
    --bind-address, a wildcard meaning loopback: `::` tries ::1 then
    127.0.0.1; k3s's 127.0.0.1 then ::1; a pod's own address), else the
    kind's default, else 127.0.0.1:6443.
    """
    if target.host:
        hosts: Tuple[str, ...] = (target.host,)
    elif process is not None and process.hosts:
        hosts = process.hosts
    elif process is not None and process.bind_address:
        hosts = probe_hosts(process.bind_address)
    else:
        hosts = KIND_HOSTS.get(target.kind, ("127.0.0.1",))
    port = target.port
    if not port:
        found = process.secure_port if process is not None else None
        port = found or KIND_PORT.get(target.kind, DEFAULT_SECURE_PORT)
    return hosts, port


def resolve_endpoint(target: TargetConfig, process: Optional[ApiserverProcess]) -> Tuple[str, int]:
    """Given a target and its process (if found), return the first host and the port to probe."""
    hosts, port = probe_addresses(target, process)
    return hosts[0], port


def assumed_lifetime(target: TargetConfig, learned: Optional[timedelta]) -> timedelta:
    """Given a target and a lifetime learned from an earlier probe of the same
    process (if any), return the lifetime to assume when the probe fails."""
    if target.lifetime is not None:
        return target.lifetime
    return learned if learned is not None else DEFAULT_LIFETIME


def expand(
    targets: Sequence[TargetConfig], finder: ProcessFinder
) -> List[Tuple[TargetConfig, Discovery]]:
    """Given the configured targets, return each target to check with what
    discovery found for it; a target that stands for every apiserver becomes
    one target per apiserver found, named by its stable label."""
    planned: List[Tuple[TargetConfig, Discovery]] = []
    for target in targets:
        try:
            planned.extend(_expand_one(target, finder))
        except Exception as exc:
            # Whatever /proc made discovery trip over stays this target's.
            planned.append((target, Discovery(None, _crash(exc))))
    return planned


def _expand_one(
    target: TargetConfig, finder: ProcessFinder
) -> List[Tuple[TargetConfig, Discovery]]:
    """Given one target, return it with its discovery; or, for a target
    standing for every apiserver, each apiserver found as a target of its own."""
    if not target.discovers_all:
        return [(target, _find(target, finder))]
    found, error = finder.find_all(target.aggregated)
    if not found:
        looked = ", ".join(process_names(target.aggregated))
        reason = error or (
            f"no apiserver process found on this node (looked for {looked}); nothing "
            "probed: name an endpoint in [[targets]] to probe one"
        )
        return [(target, Discovery(None, reason))]
    return [
        (
            replace(target, name=p.label, kind=p.kind or "kubeadm", process_name=p.name),
            Discovery(p, p.unreachable),
        )
        for p in found
    ]


def _find(target: TargetConfig, finder: ProcessFinder) -> Discovery:
    """Given one target (not standing for all), find its process."""
    process_name = target.process_name
    if process_name == DEFAULT_PROCESS_NAME and target.kind in KIND_PROCESS:
        process_name = KIND_PROCESS[target.kind]
    if not process_name:
        return Discovery(None, None)
    return finder.find(process_name, target.port or None)


def gather_facts(target: TargetConfig, finder: ProcessFinder, probe: ProbeFunction) -> TargetFacts:
    """Given a target, find its process and probe it; return what was seen."""
    return _observe(target, _find(target, finder), probe)


def _observe(target: TargetConfig, discovery: Discovery, probe: ProbeFunction) -> TargetFacts:
    """Given a target and its discovery, probe it (not when discovery says it
    cannot be reached, or when nothing was found for a target standing for
    every apiserver); return the facts."""
    process = discovery.process
    result: Optional[ProbeResult] = None
    unreachable = process is not None and process.unreachable is not None
    nothing = process is None and target.discovers_all
    if not unreachable and not nothing:
        result = _probe_in_order(target, process, probe)
    return TargetFacts(
        target=target.name, process=process, discovery_error=discovery.error, probe=result
    )


def _probe_in_order(
    target: TargetConfig, process: Optional[ApiserverProcess], probe: ProbeFunction
) -> ProbeResult:
    """Given a target and its process, probe its addresses in order within
    the target's one deadline; return the first certificate, else the last failure."""
    hosts, port = probe_addresses(target, process)
    budget = target.timeout.total_seconds()
    deadline = time.monotonic() + budget
    result = probe(hosts[0], port, target.server_name, budget)
    for host in hosts[1:]:
        left = deadline - time.monotonic()
        if result.cert is not None or left < _MIN_FALLBACK_SECONDS:
            break
        result = probe(host, port, target.server_name, left)
    return result


def observe_all(
    planned: Sequence[Tuple[TargetConfig, Discovery]], probe: ProbeFunction
) -> List[TargetFacts]:
    """Given targets with their discoveries, probe them in parallel (bounded)
    under one overall deadline; return the facts in the same order. A target
    whose probe raised, or did not end by the deadline, gets that as its error."""
    if len(planned) <= 1:
        return [_observe_safely(target, discovery, probe) for target, discovery in planned]
    results: List[Optional[TargetFacts]] = [None] * len(planned)
    pending = list(range(len(planned)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                index = pending.pop(0)
            target, discovery = planned[index]
            results[index] = _observe_safely(target, discovery, probe)

    workers = min(MAX_PARALLEL_PROBES, len(planned))
    longest = max(target.timeout.total_seconds() for target, _ in planned)
    rounds = -(-len(planned) // workers)
    # Every probe has its own deadline; this one only guards against a probe
    # that ignores it, so the check as a whole always ends.
    deadline = time.monotonic() + longest * rounds + 1.0
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    facts: List[TargetFacts] = []
    for (target, discovery), fact in zip(planned, results):
        if fact is None:
            fact = _failed(target, discovery, "no answer within the check's overall deadline")
        facts.append(fact)
    return facts


def _observe_safely(
    target: TargetConfig, discovery: Discovery, probe: ProbeFunction
) -> TargetFacts:
    try:
        return _observe(target, discovery, probe)
    except Exception as exc:
        # Whatever a peer made the probe trip over is this target's UNKNOWN,
        # never a crash that hides the other targets.
        return _failed(target, discovery, _crash(exc))


def _crash(exc: Exception) -> str:
    """Given an exception, return it as one line for the target's error."""
    return f"check failed: {type(exc).__name__}: {one_line(str(exc))}"


def _failed(target: TargetConfig, discovery: Discovery, error: str) -> TargetFacts:
    hosts, port = probe_addresses(target, discovery.process)
    failed = ProbeResult(hosts[0], port, target.server_name, None, "not-checked", error)
    return TargetFacts(target.name, discovery.process, discovery.error, failed)


def run_check(
    targets: Sequence[TargetConfig],
    thresholds: Thresholds,
    finder: ProcessFinder,
    probe: ProbeFunction,
    clock: Callable[[], datetime],
    learned: LearnedLifetime = nothing_learned,
) -> CheckReport:
    """Check every target; the clock is read once per target, after the probes."""
    planned = expand(targets, finder)
    observed = observe_all(planned, probe)
    reports = []
    for (target, discovery), facts in zip(planned, observed):
        lifetime = assumed_lifetime(target, learned(target.name, facts.process))
        assessment = assess(facts, thresholds, lifetime, clock())
        if discovery.rejected and discovery.error and discovery.error not in assessment.notes:
            assessment = replace(assessment, notes=(*assessment.notes, discovery.error))
        reports.append(TargetReport(target=target, facts=facts, assessment=assessment))
    return CheckReport(checked_at=clock(), thresholds=thresholds, targets=tuple(reports))


def only_target(report: CheckReport, name: Optional[str]) -> CheckReport:
    """Given a report and `--target NAME` (None: all), return the report of
    that target alone. A name discovery did not find is UNKNOWN, listing the
    names it found."""
    if name is None or all(t.target.name == name for t in report.targets):
        return report
    chosen = tuple(t for t in report.targets if t.target.name == name)
    if not chosen:
        found = ", ".join(t.target.name for t in report.targets)
        facts = TargetFacts(name, None, f"no apiserver named {name} (found: {found})", None)
        lost = assess(facts, report.thresholds, DEFAULT_LIFETIME, report.checked_at)
        target = replace(report.targets[0].target, name=name)
        chosen = (TargetReport(target=target, facts=facts, assessment=lost),)
    return replace(report, targets=chosen)
