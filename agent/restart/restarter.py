"""Acting on a restart decision: intent, lease, guards, hooks, method, verify.

The order is what makes it safe: the intent is written to the state file
before anything is touched (so a crash or kill -9 mid-restart can never lead
to a second restart within min_interval), guards are asked only when the
decision is to restart, the outcome replaces the intent, the post_hook hears
the outcome, and the lease is released last. A failure is logged for a human
and never retried inside min_interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Dict, Optional, Tuple

from agent.check import ProbeFunction, resolve_endpoint
from agent.config.types import Config, RestartConfig, TargetConfig
from agent.judge.decide import GuardResults, RestartDecision, apply_guards
from agent.kube.kubeconfig import KubeconfigError, load_kubeconfig
from agent.kube.lease import Lease, LeaseClient, LeaseError
from agent.model import DEFAULT_SECURE_PORT, ApiserverProcess, ProbeResult, TargetReport
from agent.observe.discover import ProcessFinder
from agent.report.events import (
    PRIORITY_CRIT,
    PRIORITY_INFO,
    PRIORITY_NOTICE,
    PRIORITY_WARNING,
    EventKind,
    send_event,
)
from agent.report.journal import Journal
from agent.restart.methods import (
    NOT_RESTARTABLE,
    MethodResult,
    restart_command,
    restart_signal,
    restart_static_pod,
    restart_systemd,
    shape_method,
)
from agent.restart.runner import run_hook
from agent.restart.verify import ReadyzResult, Verification, readyz, readyz_url, verify_restart
from agent.state.records import RestartRecord, add_restart, finish_restart
from agent.state.store import RestartLock, update_state
from agent.timefmt import format_rfc3339


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
    """Carries out one restart at a time; the I/O edges are injectable."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        probe: ProbeFunction,
        node: str,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.policy = config.restart
        self.journal = journal
        self.probe = probe
        self.node = node
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep

    # --- journal -------------------------------------------------------------

    def log(self, kind: EventKind, priority: int, message: str, **fields: object) -> None:
        send_event(self.journal, kind, priority, message, **fields)

    # --- guards ----------------------------------------------------------------

    def peer_problem(self) -> Optional[str]:
        timeout = min(10.0, self.policy.command_timeout.total_seconds())
        for peer in self.policy.peers:
            result = readyz_url(peer, timeout, self.policy.peer_ca or None)
            if not result.ok:
                return f"peer {peer} not ready: {result.detail}"
        return None

    def command_problem(self, env: Dict[str, str]) -> Optional[str]:
        if not self.policy.blocking_command:
            return None
        result = run_hook(
            self.policy.blocking_command, env, self.policy.command_timeout.total_seconds()
        )
        return None if result.ok else f"blocking command said no: {result.detail}"

    def read_only_guards(self, report: TargetReport) -> GuardResults:
        """The guards as `plan` asks them: peers, the blocking command and who
        holds the lease, without taking it."""
        found = self.guards(self._env(report))
        try:
            lease = LeaseHolder.open(self.policy, self.node, self.clock, self.journal)
        except (LeaseError, KubeconfigError, OSError) as error:
            return replace(found, lease_holder=f"unknown ({error})")
        if lease is None:
            return found
        holder = lease.holder()
        if holder == lease.lease.identity:  # ours: no objection
            holder = None
        return replace(found, lease_holder=holder)

    def guards(self, env: Dict[str, str]) -> GuardResults:
        """Peers and the blocking command (the lease is taken separately)."""
        peer = self.peer_problem()
        if peer is not None:
            return GuardResults(peer_problem=peer)
        return GuardResults(command_problem=self.command_problem(env))

    # --- the method ------------------------------------------------------------

    def method(
        self, process: Optional[ApiserverProcess], env: Dict[str, str], kind: str = ""
    ) -> MethodResult:
        timeout = self.policy.command_timeout.total_seconds()
        method, unit = shape_method(self.policy.method, self.policy.unit, kind)
        if method == NOT_RESTARTABLE:
            return MethodResult(
                False,
                f"{NOT_RESTARTABLE}: the apiserver runs in a pod's own network namespace "
                "(a hosted control plane); its management cluster restarts it",
            )
        if method == "systemd":
            return restart_systemd(unit, timeout)
        if method in ("static-pod", "signal"):
            if process is None:
                return MethodResult(False, f"{method} restart needs the apiserver process")
            if method == "signal":
                return restart_signal(process)
            return restart_static_pod(process, timeout)
        return restart_command(self.policy.command, env, timeout)

    def verify(
        self, target: TargetConfig, report: TargetReport, lease: Optional[LeaseHolder]
    ) -> Verification:
        old = report.facts.process
        port = target.port or (old.secure_port if old else None) or DEFAULT_SECURE_PORT

        def find() -> Optional[ApiserverProcess]:
            # A fresh scan each time, and only a process serving the same
            # port: a finder's cache, or another apiserver of the same name,
            # must never pass for "the new process".
            found = ProcessFinder().find(target.process_name, port).process
            return found if found is not None and found.secure_port == port else None

        def endpoint() -> Tuple[str, int]:
            return resolve_endpoint(target, find() if target.process_name else None)

        def probe_once() -> ProbeResult:
            host, probe_port = endpoint()
            return self.probe(host, probe_port, target.server_name, target.timeout.total_seconds())

        def ready() -> ReadyzResult:
            host, probe_port = endpoint()
            result = readyz(host, probe_port, target.timeout.total_seconds())
            if result.status in (401, 403):
                # Anonymous access is off on this cluster (normal): the new
                # apiserver is serving; its readiness cannot be read without
                # credentials, and the new certificate already proves it runs.
                return ReadyzResult(True, result.status, f"{result.detail} (serving)")
            return result

        def sleep(seconds: float) -> None:
            if lease is not None:
                lease.renew()
            self.sleep(seconds)

        deadline = self.monotonic() + self.policy.ready_timeout.total_seconds()
        return verify_restart(
            old if target.process_name else None,
            report.assessment.not_after,
            find if target.process_name else None,
            probe_once,
            ready,
            deadline,
            self.monotonic,
            sleep,
        )

    # --- the whole act ---------------------------------------------------------

    def run(self, report: TargetReport, decision: RestartDecision) -> RestartOutcome:
        """Given a target's check and a decision to restart it, act; return the outcome."""
        target = report.target
        name = target.name
        lock = RestartLock(self.config.state_dir)
        if not lock.acquire():
            message = "restart skipped: another restart is in progress on this node"
            return RestartOutcome(
                name, replace(decision, restart=False, message=message), False, None, message
            )
        try:
            return self._run_locked(report, decision)
        finally:
            lock.release()

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
            "RESTART_METHOD": self.policy.method,
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
            phase="intent",
            outcome=None,
            old_not_after=report.assessment.not_after,
            new_not_after=None,
            detail=decision.reason.value,
        )
        # Before anything is touched: from here a crash counts as a restart.
        update_state(self.config.state_dir, lambda s: add_restart(s, intent), now)

        try:
            lease = LeaseHolder.open(self.policy, self.node, self.clock, self.journal)
            holder = lease.acquire() if lease is not None else None
        except (LeaseError, KubeconfigError, OSError) as error:
            lease, holder = None, f"nobody known: the lease could not be used ({error})"
        if holder is not None:
            final = apply_guards(decision, GuardResults(lease_holder=holder))
        else:
            final = apply_guards(decision, self.guards(env))
        if not final.restart:
            return self._finish(report, intent, final, "blocked", final.message, lease, fields)

        pre = run_hook(self.policy.pre_hook, env, self.policy.command_timeout.total_seconds())
        if not pre.ok:
            message = f"restart aborted: pre_hook failed: {pre.detail}"
            return self._finish(report, intent, final, "aborted", message, lease, fields)

        self.log(
            EventKind.RESTART_STARTED,
            PRIORITY_NOTICE,
            f"{name}: restarting the apiserver ({final.message})",
            **fields,
        )
        result = self.method(report.facts.process, env, report.target.kind)
        if not result.ok:
            verification: Optional[Verification] = None
            message = f"restart failed: {result.detail}"
        else:
            verification = self.verify(report.target, report, lease)
            message = verification.detail
        outcome = "succeeded" if verification is not None and verification.ok else "failed"
        new_not_after = verification.new_not_after if verification is not None else None
        return self._finish(
            report, intent, final, outcome, message, lease, fields, new_not_after, acted=True
        )

    def _finish(
        self,
        report: TargetReport,
        intent: RestartRecord,
        decision: RestartDecision,
        outcome: str,
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
            intent, phase="done", outcome=outcome, new_not_after=new_not_after, detail=message
        )
        try:
            update_state(self.config.state_dir, lambda s: finish_restart(s, intent, done), now)
        except OSError as error:  # the intent stays: it still counts, which is safe
            self.journal.send(f"cannot record the restart outcome: {error}", PRIORITY_WARNING, {})
        fields = {**fields, "RESTART_OUTCOME": outcome, "NEW_CERT_NOT_AFTER": _stamp(new_not_after)}
        if outcome == "succeeded":
            self.log(EventKind.RESTART_SUCCEEDED, PRIORITY_INFO, f"{name}: {message}", **fields)
        elif outcome == "failed":
            self.log(EventKind.RESTART_FAILED, PRIORITY_CRIT, f"{name}: {message}", **fields)
        else:
            self.log(EventKind.RESTART_BLOCKED, PRIORITY_WARNING, f"{name}: {message}", **fields)
        if acted:
            env = {
                **self._env(report),
                "KLG_OUTCOME": outcome,
                "KLG_DETAIL": message,
                "KLG_NEW_NOT_AFTER": _stamp(new_not_after),
            }
            post = run_hook(self.policy.post_hook, env, self.policy.command_timeout.total_seconds())
            if not post.ok:
                self.journal.send(f"{name}: post_hook failed: {post.detail}", PRIORITY_WARNING, {})
        if lease is not None:
            lease.release()
        succeeded = None if not acted else outcome == "succeeded"
        final = decision if acted else replace(decision, restart=False, message=message)
        return RestartOutcome(name, final, acted, succeeded, message)


class LeaseHolder:
    """The optional cluster-wide lease; every failure becomes a reason, not a crash."""

    def __init__(self, lease: Lease, journal: Journal, clock: Callable[[], datetime]) -> None:
        self.lease = lease
        self.journal = journal
        self.clock = clock
        self.held = False

    @classmethod
    def open(
        cls,
        policy: RestartConfig,
        node: str,
        clock: Callable[[], datetime],
        journal: Journal,
    ) -> Optional[LeaseHolder]:
        """None when no lease is configured. Raise LeaseError (or KubeconfigError)
        when the kubeconfig cannot be used."""
        if policy.lease is None:
            return None
        config = policy.lease
        client = LeaseClient(load_kubeconfig(config.kubeconfig), timeout=10.0)
        lease = Lease(
            client, config.namespace, config.name, config.duration, config.identity or node
        )
        return cls(lease, journal, clock)

    def acquire(self) -> Optional[str]:
        """Take the lease; return None when ours, else who holds it (or why not)."""
        try:
            if self.lease.acquire(self.clock()):
                self.held = True
                return None
            return self.lease.holder(self.clock()) or "another writer (conflict)"
        except (LeaseError, OSError) as error:
            return f"nobody known: the lease could not be taken ({error})"

    def renew(self) -> None:
        if not self.held:
            return
        try:
            if not self.lease.renew(self.clock()):
                self.journal.send(f"{self.lease}: lost while restarting", PRIORITY_WARNING, {})
                self.held = False
        except (LeaseError, OSError) as error:
            self.journal.send(f"{self.lease}: renew failed: {error}", PRIORITY_WARNING, {})

    def release(self) -> None:
        if not self.held:
            return
        try:
            self.lease.release(self.clock())
        except (LeaseError, OSError) as error:
            # It expires by itself after its duration; say so and move on.
            self.journal.send(
                f"{self.lease}: release failed ({error}); it expires by itself",
                PRIORITY_WARNING,
                {},
            )
        self.held = False

    def holder(self) -> Optional[str]:
        try:
            return self.lease.holder(self.clock())
        except (LeaseError, OSError) as error:
            return f"unknown ({error})"
