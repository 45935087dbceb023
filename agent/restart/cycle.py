"""The restart part of the daemon's check cycle: decide for every target,
restart at most one per cycle, and log each target's plan when it changes,
never once per interval.

A failure while deciding, restarting or logging for one target is that
target's outcome (its STATUS= part and a journal record by kind); the other
targets are still decided. Imported by the daemon only while restarts are
enabled.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable, Dict, Optional, Tuple

from agent.check import ProbeFunction
from agent.config.types import Config
from agent.judge.decide import Reason, RestartDecision, decide
from agent.model import CheckReport, TargetReport
from agent.report.events import (
    PRIORITY_CRIT,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    EventKind,
    send_event,
)
from agent.report.journal import Journal
from agent.report.problems import Problems, describe
from agent.restart.edges import RestartEdges
from agent.restart.restarter import Restarter
from agent.state.records import AgentState, last_restart
from agent.timefmt import format_rfc3339

# Given each target's restart part of STATUS=, say it before acting: a
# restart can take ready_timeout.
Announce = Callable[[Dict[str, str]], None]


class RestartRound:
    """One per daemon: remembers the plan last logged per target."""

    def __init__(self, journal: Journal, problems: Problems, node: str) -> None:
        self.journal = journal
        self.problems = problems
        self.node = node
        self.planned: Dict[str, str] = {}
        self.restarter: Optional[Restarter] = None

    def restarter_for(
        self, config: Config, probe: ProbeFunction, clock: Callable[[], datetime]
    ) -> Restarter:
        """The restarter, kept while the config stays (a reload makes a new
        one): it holds the lease after a failed restart, and watches other
        holders' leases from one check to the next."""
        if self.restarter is None or self.restarter.config is not config:
            edges = RestartEdges(probe)
            self.restarter = Restarter(config, self.journal, self.node, clock, edges)
        return self.restarter

    def run(
        self,
        report: CheckReport,
        config: Config,
        state: AgentState,
        probe: ProbeFunction,
        clock: Callable[[], datetime],
        announce: Announce,
    ) -> Tuple[Dict[str, str], bool]:
        """Given a check, the config, the state, the probe, the clock and how to
        announce, decide and restart at most one target; return the restart
        part of STATUS= per target and whether a restart method ran."""
        policy = config.restart
        restarter = self.restarter_for(config, probe, clock)
        try:
            holding = restarter.keep_lease(report.targets, state)
        except Exception as error:  # never the round's end: said by kind, once
            holding = None
            self.problems.report("lease", error, f"restart lease: {describe(error)}")
        now = clock()
        decisions = [
            decide(
                item.assessment, policy, last_restart(state, item.target.name, now), self.node, now
            )
            for item in report.targets
        ]
        announce({d.target: d.status for d in decisions if d.status})
        texts: Dict[str, str] = {}
        restarted = acted = False
        for item, decision in zip(report.targets, decisions):
            name = item.target.name
            try:
                if decision.restart and not restarted:
                    restarted = True
                    self.planned.pop(name, None)
                    outcome = restarter.run(item, decision)
                    acted = outcome.acted
                    texts[name] = outcome.status
                else:
                    if decision.restart:
                        decision = replace(
                            decision, restart=False, message="restart waits: one restart at a time"
                        )
                    texts[name] = decision.status
                    self.note_plan(item, decision)
                self.problems.solved(f"restart {name}")
            except Exception as error:  # this target's outcome; the others go on
                texts[name] = f"restart error: {describe(error)}"
                self.problems.report(
                    f"restart {name}",
                    error,
                    f"{name}: restart error: {describe(error)}",
                    PRIORITY_CRIT,
                )
        if holding is not None:  # after a failed restart: why no other master restarts
            for name in (t.target.name for t in report.targets if policy.applies_to(t.target.name)):
                texts[name] = f"{texts[name]}; {holding}" if texts.get(name) else holding
        return texts, acted

    def note_plan(self, item: TargetReport, decision: RestartDecision) -> None:
        """Log the restart plan when it changes, never once per interval."""
        name = item.target.name
        if self.planned.get(name) == decision.message:
            return
        self.planned[name] = decision.message
        if not decision.status:  # not due: nothing to say
            return
        waiting = decision.reason in (Reason.UNKNOWN_EXPIRY, Reason.TOO_SOON)
        opening = decision.next_opening
        send_event(
            self.journal,
            EventKind.RESTART_BLOCKED if waiting else EventKind.RESTART_PLANNED,
            PRIORITY_WARNING if waiting else PRIORITY_NOTICE,
            f"{name}: {decision.message}",
            TARGET=name,
            RESTART_REASON=decision.reason.value,
            RESTART_AT=format_rfc3339(opening.start) if opening else None,
        )
