"""Acting on a restart decision: decide again, intent, lease, guards, hooks, method, verify.

The order is what makes it safe: under the node's restart lock the stored
history is read again and the decision taken again (the daemon and a person
may have decided from the same old state); the intent is written to the state
file before anything is touched (so a crash or kill -9 mid-restart can never
lead to a second restart within min_interval); guards are asked only when the
decision is to restart; anything that fails before the method runs ends the
intent as "aborted", which does not count; the outcome replaces the intent,
the post_hook hears it. The lease is released once the new apiserver is
verified; after a failed restart it is kept, so no other master restarts
while this one is down. A failure is logged for a human and never retried
inside min_interval.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Dict, Optional, Tuple

from agent.check import resolve_endpoint
from agent.config.types import Config, RestartConfig
from agent.judge.decide import GuardResults, Reason, RestartDecision, apply_guards, decide
from agent.kube.api import printable
from agent.kube.kubeconfig import KubeconfigError
from agent.kube.lease import LeaseError
from agent.model import DEFAULT_SECURE_PORT, ApiserverProcess, ProbeResult, TargetReport
from agent.report.events import (
    PRIORITY_CRIT,
    PRIORITY_INFO,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    EventKind,
    send_event,
)
from agent.report.journal import Journal
from agent.restart.edges import RestartEdges
from agent.restart.guards import CALL_TIMEOUT, Guards
from agent.restart.lease_holder import LeaseHolder, LeaseKeeper
from agent.restart.plan import forced
from agent.restart.verify import ReadyzResult, Verification, verify_restart
from agent.state.records import (
    AgentState,
    RestartPhase,
    RestartRecord,
    RestartResult,
    add_restart,
    finish_restart,
    last_restart,
)
from agent.state.store import RestartLock, read_state, update_state
from agent.timefmt import format_rfc3339

# Verification polls every 2 s and a last round may start at the deadline.
_VERIFY_SLACK = 60.0


@dataclass(frozen=True)
class RestartOutcome:
    target: str
    decision: RestartDecision  # after the guards
    acted: bool  # the method ran
    succeeded: Optional[bool]  # None when it did not act
    detail: str

    @property
    def status(self) -> str:
        if self.succeeded is None:
            return self.decision.message
        return self.detail


def _stamp(moment: Optional[datetime]) -> str:
    return "" if moment is None else format_rfc3339(moment)


class Restarter:
    """Carries out one restart at a time; its I/O goes through `edges`. One
    instance may live as long as the daemon: it keeps the lease it holds."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        node: str,
        clock: Callable[[], datetime],
        edges: RestartEdges,
    ) -> None:
        self.config = config
        self.policy = config.restart
        self.journal = journal
        self.node = node
        self.clock = clock
        self.edges = edges
        self._guards = Guards(config.restart, edges, journal)
        self.keeper = LeaseKeeper(
            config.restart, node, journal, clock, edges.open_lease, edges.monotonic
        )

    def budget(self) -> float:
        """Seconds one restart may take at most (see budget_for)."""
        return self.budget_for(self.policy)

    @staticmethod
    def budget_for(policy: RestartConfig) -> float:
        """Given a restart policy, return the seconds one restart may take at
        most: the peers' /readyz, the blocking command, pre_hook, method and
        post_hook, verification, and the Lease calls (each reads, then writes)."""
        if not policy.enabled:
            return 0.0
        command = policy.command_timeout.total_seconds()
        peers = len(policy.peers) * min(CALL_TIMEOUT, command)
        lease = 0.0 if policy.lease is None else 2 * 2 * CALL_TIMEOUT
        return peers + 4 * command + policy.ready_timeout.total_seconds() + _VERIFY_SLACK + lease

    # --- journal -------------------------------------------------------------

    def log(self, kind: EventKind, priority: int, message: str, **fields: object) -> None:
        send_event(self.journal, kind, priority, message, **fields)

    # --- guards ----------------------------------------------------------------

    def guards(self, env: Dict[str, str], kind: str = "") -> GuardResults:
        """Peers, the blocking command and, for static pods, the kubelet (the
        lease is taken separately)."""
        return self._guards.ask(env, kind)

    def read_only_guards(self, report: TargetReport) -> GuardResults:
        """The guards as `plan` asks them: peers, the blocking command, the
        kubelet and who holds the lease, without taking it."""
        found = self.guards(self._env(report), report.target.kind)
        try:
            lease = self.lease_holder()
        except (LeaseError, KubeconfigError, OSError) as error:
            return replace(found, lease_holder=f"unknown ({error})")
        if lease is None:
            return found
        holder = lease.holder()
        if holder == lease.lease.identity:  # ours: no objection
            holder = None
        return replace(found, lease_holder=holder)

    def lease_holder(self) -> Optional[LeaseHolder]:
        """The configured lease (opened once), or None. Raise LeaseError or
        KubeconfigError when the kubeconfig cannot be used."""
        return self.keeper.open()

    def keep_lease(self, items: Tuple[TargetReport, ...], state: AgentState) -> Optional[str]:
        """Between restarts (see LeaseKeeper.keep); return the STATUS text
        while the lease is held after a failure, else None."""
        return self.keeper.keep(items, state, self.edges.readyz)

    # --- verification ----------------------------------------------------------

    def verify(
        self, report: TargetReport, began: datetime, lease: Optional[LeaseHolder]
    ) -> Verification:
        target = report.target
        old = report.facts.process
        port = target.port or (old.secure_port if old else None) or DEFAULT_SECURE_PORT

        def find() -> Optional[ApiserverProcess]:
            return self.edges.find_process(target.process_name, port)

        def endpoint() -> Tuple[str, int]:
            return resolve_endpoint(target, find() if target.process_name else None)

        def probe_once() -> ProbeResult:
            host, probe_port = endpoint()
            timeout = target.timeout.total_seconds()
            return self.edges.probe(host, probe_port, target.server_name, timeout)

        def ready() -> ReadyzResult:
            host, probe_port = endpoint()
            return self.edges.readyz(host, probe_port, target.timeout.total_seconds())

        def sleep(seconds: float) -> None:
            if lease is not None:
                lease.renew()
            self.edges.sleep(seconds)

        probe = report.facts.probe
        deadline = self.edges.monotonic() + self.policy.ready_timeout.total_seconds()
        return verify_restart(
            old if target.process_name else None,
            probe.cert if probe is not None else None,
            find if target.process_name else None,
            probe_once,
            ready,
            deadline,
            self.edges.monotonic,
            sleep,
            began=began,
        )

    # --- the whole act ---------------------------------------------------------

    def run(
        self,
        report: TargetReport,
        decision: RestartDecision,
        *,
        force: bool = False,
        seen_last: Optional[datetime] = None,
    ) -> RestartOutcome:
        """Given a target's check and a decision to restart it (with `force`,
        a person's; `seen_last` the last restart that decision saw), take the
        node's restart lock, decide again from the stored history, and act;
        return the outcome."""
        name = report.target.name
        lock = RestartLock(self.config.state_dir)
        if not lock.acquire():
            message = "restart skipped: another restart is in progress on this node"
            return RestartOutcome(
                name, replace(decision, restart=False, message=message), False, None, message
            )
        try:
            again = self._decide_again(report, decision, force, seen_last)
            if not again.restart:
                return RestartOutcome(name, again, False, None, again.message)
            return self._run_locked(report, again)
        finally:
            lock.release()

    def _decide_again(
        self,
        report: TargetReport,
        decision: RestartDecision,
        force: bool,
        seen_last: Optional[datetime],
    ) -> RestartDecision:
        """The decision again, from the history as stored now (under the lock)."""
        name = report.target.name
        try:
            state = read_state(self.config.state_dir)
        except FileNotFoundError:
            state = AgentState.empty()
        except (OSError, ValueError):
            return decision  # the intent write will say what is wrong
        now = self.clock()
        last = last_restart(state, name, now)
        again = decide(report.assessment, self.policy, last, self.node, now)
        if not force:
            return again
        if last is not None and last != seen_last:
            return replace(
                again,
                restart=False,
                reason=Reason.TOO_SOON,
                message=f"restart skipped: another restart of {name} was recorded at "
                f"{last:%Y-%m-%d %H:%M:%S} UTC while this one was being decided",
            )
        return forced(again)

    def _env(self, report: TargetReport) -> Dict[str, str]:
        process = report.facts.process
        return {
            "KLG_TARGET": report.target.name,
            "KLG_PID": str(process.pid) if process else "",
            "KLG_NOT_AFTER": _stamp(report.assessment.not_after),
            "KLG_NODE": self.node,
        }

    def _run_locked(self, report: TargetReport, decision: RestartDecision) -> RestartOutcome:
        name = report.target.name
        fields: Dict[str, object] = {
            "TARGET": name,
            "RESTART_REASON": decision.reason.value,
            "RESTART_METHOD": self.policy.method.value,
            "CERT_NOT_AFTER": _stamp(report.assessment.not_after),
        }
        if self.policy.dry_run:
            message = f"{name}: dry run: would restart now ({decision.message})"
            self.log(EventKind.RESTART_PLANNED, PRIORITY_NOTICE, message, DRY_RUN=1, **fields)
            return RestartOutcome(name, decision, False, None, message)
        env = self._env(report)
        now = self.clock()
        intent = RestartRecord(
            target=name,
            at=now,
            phase=RestartPhase.INTENT,
            outcome=None,
            old_not_after=report.assessment.not_after,
            new_not_after=None,
            detail=decision.reason.value,
        )
        # Before anything is touched: from here a crash counts as a restart.
        update_state(self.config.state_dir, lambda s: add_restart(s, intent), now)

        lease: Optional[LeaseHolder] = None
        try:
            final, lease = self._take_lease_and_ask(decision, env, report.target.kind)
            if not final.restart:
                return self._finish(
                    report, intent, final, RestartResult.BLOCKED, final.message, lease, fields
                )
            pre = self.edges.hook(
                self.policy.pre_hook, env, self.policy.command_timeout.total_seconds()
            )
            if not pre.ok:
                message = f"restart aborted: pre_hook failed: {pre.detail}"
                return self._finish(
                    report, intent, final, RestartResult.ABORTED, message, lease, fields
                )
        except Exception as error:  # nothing ran yet: the intent must not count
            message = (
                "restart aborted before the method ran: "
                f"{type(error).__name__}: {printable(str(error))}"
            )
            return self._finish(
                report, intent, decision, RestartResult.ABORTED, message, lease, fields
            )

        self.log(
            EventKind.RESTART_STARTED,
            PRIORITY_NOTICE,
            f"{name}: restarting the apiserver ({final.message})",
            **fields,
        )
        began = self.clock()
        result = self.edges.method(self.policy, report.facts.process, env, report.target.kind)
        if not result.ok:
            verification: Optional[Verification] = None
            message = f"restart failed: {result.detail}"
        else:
            verification = self.verify(report, began, lease)
            message = verification.detail
        ok = verification is not None and verification.ok
        outcome = RestartResult.SUCCEEDED if ok else RestartResult.FAILED
        new_not_after = verification.new_not_after if verification is not None else None
        return self._finish(
            report, intent, final, outcome, message, lease, fields, new_not_after, acted=True
        )

    def _take_lease_and_ask(
        self, decision: RestartDecision, env: Dict[str, str], kind: str
    ) -> Tuple[RestartDecision, Optional[LeaseHolder]]:
        """Take the lease (if configured), then ask the guards; return the
        decision after them and the lease (held or not)."""
        try:
            lease = self.lease_holder()
            holder = lease.acquire() if lease is not None else None
        except (LeaseError, KubeconfigError, OSError) as error:
            lease, holder = None, f"nobody known: the lease could not be used ({error})"
        if holder is not None:
            return apply_guards(decision, GuardResults(lease_holder=holder)), lease
        return apply_guards(decision, self.guards(env, kind)), lease

    def _finish(
        self,
        report: TargetReport,
        intent: RestartRecord,
        decision: RestartDecision,
        outcome: RestartResult,
        message: str,
        lease: Optional[LeaseHolder],
        fields: Dict[str, object],
        new_not_after: Optional[datetime] = None,
        *,
        acted: bool = False,
    ) -> RestartOutcome:
        name = report.target.name
        now = self.clock()
        done = replace(
            intent,
            phase=RestartPhase.DONE,
            outcome=outcome,
            new_not_after=new_not_after,
            detail=message,
        )
        try:
            update_state(self.config.state_dir, lambda s: finish_restart(s, intent, done), now)
        except OSError as error:  # the intent stays: it still counts, which is safe
            self.journal.send(f"cannot record the restart outcome: {error}", PRIORITY_WARNING, {})
        fields = {
            **fields,
            "RESTART_OUTCOME": outcome.value,
            "NEW_CERT_NOT_AFTER": _stamp(new_not_after),
        }
        if outcome is RestartResult.SUCCEEDED:
            self.log(EventKind.RESTART_SUCCEEDED, PRIORITY_INFO, f"{name}: {message}", **fields)
        elif outcome is RestartResult.FAILED:
            self.log(EventKind.RESTART_FAILED, PRIORITY_CRIT, f"{name}: {message}", **fields)
        else:
            self.log(EventKind.RESTART_BLOCKED, PRIORITY_WARNING, f"{name}: {message}", **fields)
        if acted:
            env = {
                **self._env(report),
                "KLG_OUTCOME": outcome.value,
                "KLG_DETAIL": message,
                "KLG_NEW_NOT_AFTER": _stamp(new_not_after),
            }
            post = self.edges.hook(
                self.policy.post_hook, env, self.policy.command_timeout.total_seconds()
            )
            if not post.ok:
                self.journal.send(f"{name}: post_hook failed: {post.detail}", PRIORITY_WARNING, {})
        self.keeper.settle(lease, outcome)
        succeeded = None if not acted else outcome is RestartResult.SUCCEEDED
        final = decision if acted else replace(decision, restart=False, message=message)
        return RestartOutcome(name, final, acted, succeeded, message)
