"""The cluster-wide Lease as the restarter holds it.

Taken before a restart, renewed while verifying, released once this node's
apiserver is verified healthy with a renewed certificate. After a failed or
unverified restart it is kept (and renewed on every check while the daemon
runs): releasing it would let the next master restart while this one is down.
Only a verified apiserver or a person (`kube-loopback-guard lease release`)
ends that. Every failure to reach the API server becomes a reason, never a crash.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Callable, Optional, Tuple

from agent.config.types import RestartConfig
from agent.kube.kubeconfig import KubeconfigError, load_kubeconfig
from agent.kube.lease import Lease, LeaseError
from agent.kube.lease_client import LeaseClient
from agent.model import TargetReport
from agent.report.events import PRIORITY_CRIT, PRIORITY_INFO, PRIORITY_WARNING
from agent.report.journal import Journal
from agent.restart.verify import ReadyzResult, issued_since
from agent.state.records import AgentState, RestartRecord, RestartResult, unverified_restart

__all__ = ["LeaseHolder", "LeaseKeeper", "holding_message", "open_lease"]


def open_lease(
    policy: RestartConfig, node: str, monotonic: Callable[[], float] = time.monotonic
) -> Optional[Lease]:
    """Given the restart policy and the node, return the configured Lease, or
    None when there is none. Raise LeaseError or KubeconfigError when the
    kubeconfig cannot be used."""
    if policy.lease is None:
        return None
    config = policy.lease
    client = LeaseClient(load_kubeconfig(config.kubeconfig), timeout=10.0)
    identity = config.identity or node
    return Lease(client, config.namespace, config.name, config.duration, identity, monotonic)


def holding_message(lease: Lease) -> str:
    return (
        f"restart failed; holding lease {lease.namespace}/{lease.name} so no other master restarts"
    )


class LeaseHolder:
    """One Lease, held across restarts and checks by one process."""

    def __init__(self, lease: Lease, journal: Journal, clock: Callable[[], datetime]) -> None:
        self.lease = lease
        self.journal = journal
        self.clock = clock
        self.held = False

    def acquire(self) -> Optional[str]:
        """Take the lease; return None when ours, else who holds it (or why not)."""
        try:
            if self.lease.acquire(self.clock()):
                self.held = True
                return None
            holder = self.lease.holder()
        except (LeaseError, OSError) as error:
            return f"nobody known: the lease could not be taken ({error})"
        if holder is None:
            return "another writer (conflict)"
        seconds = self.lease.duration_seconds
        return (
            f"{holder} (taken over only after it stays unchanged for {seconds}s "
            "while this agent watches)"
        )

    def renew(self) -> bool:
        """Renew the lease if held; return whether it is still ours."""
        if not self.held:
            return False
        try:
            if self.lease.renew(self.clock()):
                return True
            self.journal.send(f"{self.lease}: no longer ours", PRIORITY_WARNING, {})
            self.held = False
        except (LeaseError, OSError) as error:
            self.journal.send(f"{self.lease}: renew failed: {error}", PRIORITY_WARNING, {})
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        try:
            self.lease.release(self.clock())
        except (LeaseError, OSError) as error:
            # It expires by itself once nobody renews it; say so and move on.
            self.journal.send(
                f"{self.lease}: release failed ({error}); it lapses by itself",
                PRIORITY_WARNING,
                {},
            )
        self.held = False

    def holder(self) -> Optional[str]:
        try:
            return self.lease.holder()
        except (LeaseError, OSError) as error:
            return f"unknown ({error})"

    def adopt(self) -> bool:
        """Return whether the lease is ours on the server (left held by an
        earlier failed restart, perhaps by an earlier run of the daemon), and
        hold it from now on if so."""
        try:
            self.held = self.lease.holder() == self.lease.identity
        except (LeaseError, OSError, KubeconfigError) as error:
            self.journal.send(f"{self.lease}: cannot read it: {error}", PRIORITY_WARNING, {})
        return self.held


class LeaseKeeper:
    """The lease across restarts and checks, for as long as the process runs:
    taken for a restart, released after a verified one, kept after a failed
    one (`holding`) and renewed on every check until the apiserver is verified
    healthy with a renewed certificate, or a person releases it."""

    def __init__(
        self,
        policy: RestartConfig,
        node: str,
        journal: Journal,
        clock: Callable[[], datetime],
        opener: Callable[[RestartConfig, str, Callable[[], float]], Optional[Lease]],
        monotonic: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.node = node
        self.journal = journal
        self.clock = clock
        self.opener = opener
        self.monotonic = monotonic
        self.lease: Optional[LeaseHolder] = None
        self.holding = False
        self._adoption_checked = False

    def open(self) -> Optional[LeaseHolder]:
        """The configured lease (opened once), or None. Raise LeaseError or
        KubeconfigError when the kubeconfig cannot be used."""
        if self.lease is None and self.policy.lease is not None:
            lease = self.opener(self.policy, self.node, self.monotonic)
            if lease is not None:
                self.lease = LeaseHolder(lease, self.journal, self.clock)
        return self.lease

    def settle(self, lease: Optional[LeaseHolder], outcome: RestartResult) -> None:
        """After a restart: keep the lease after a failure; release it after a
        verified restart, or after one that never ran (unless an earlier
        failure holds it)."""
        if lease is None or not lease.held:
            return
        if outcome is RestartResult.FAILED:
            self.holding = True
            where = f"{lease.lease.namespace}/{lease.lease.name}"
            self.journal.send(holding_message(lease.lease), PRIORITY_CRIT, {"LEASE": where})
            return
        if outcome is RestartResult.SUCCEEDED or not self.holding:
            self.holding = False
            lease.release()

    def keep(
        self,
        items: Tuple[TargetReport, ...],
        state: AgentState,
        readyz: Callable[[str, int, float], ReadyzResult],
    ) -> Optional[str]:
        """Given a check's targets, the stored state and how to ask /readyz:
        while a failed or unverified restart holds the lease, renew it, or
        release it once that target's apiserver serves a certificate issued
        after the restart began and /readyz is ok. An earlier run, or a
        hand-run `restart`, may have left it held: it is adopted once. Return
        the STATUS text while it is held, else None."""
        if self.policy.lease is None:
            return None
        record = unverified_restart(state)
        if not self.holding:
            if self._adoption_checked or record is None:
                return None
            self._adoption_checked = True
            try:
                lease = self.open()
            except (LeaseError, KubeconfigError, OSError):
                return None
            if lease is None or not lease.adopt():
                return None
            self.holding = True
        lease = self.lease
        if lease is None:
            return None
        if record is None or _healthy_since(items, record, readyz):
            lease.release()
            self.holding = False
            self.journal.send(
                f"lease {lease.lease.namespace}/{lease.lease.name} released: the apiserver "
                "is verified healthy with a renewed certificate",
                PRIORITY_INFO,
                {},
            )
            return None
        if not lease.renew():
            self.holding = False
            return None
        return holding_message(lease.lease)


def _healthy_since(
    items: Tuple[TargetReport, ...],
    record: RestartRecord,
    readyz: Callable[[str, int, float], ReadyzResult],
) -> bool:
    """Whether the restarted target now serves a certificate issued after the
    restart began, and its /readyz is ok."""
    item = next((i for i in items if i.target.name == record.target), None)
    probe = None if item is None else item.facts.probe
    if item is None or probe is None or probe.cert is None:
        return False
    if not issued_since(probe.cert, record.at):
        return False
    return readyz(probe.host, probe.port, item.target.timeout.total_seconds()).ok
