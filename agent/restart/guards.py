"""The guards a restart asks before acting (the lease is taken separately).

Peers' /readyz (with credentials when configured; without, a 401/403 counts
as serving and is said once per peer), the blocking command, and for static
pods the kubelet. Each answer is a reason not to restart, or None.
"""

from __future__ import annotations

from typing import Dict, Optional, Set

from agent.config.types import RestartConfig, RestartMethod
from agent.judge.decide import GuardResults
from agent.report.events import PRIORITY_NOTICE
from agent.report.journal import Journal
from agent.restart.edges import RestartEdges, effective_method

__all__ = ["CALL_TIMEOUT", "Guards"]

# One /readyz or Lease call is bounded by this.
CALL_TIMEOUT = 10.0


class Guards:
    """Asks the guards of one restart policy through the restarter's edges."""

    def __init__(self, policy: RestartConfig, edges: RestartEdges, journal: Journal) -> None:
        self.policy = policy
        self.edges = edges
        self.journal = journal
        self._unreadable_peers: Set[str] = set()

    def ask(self, env: Dict[str, str], kind: str = "") -> GuardResults:
        """Given the hook environment and the target's kind, return what the
        guards found, the first objection only."""
        peer = self.peer_problem()
        if peer is not None:
            return GuardResults(peer_problem=peer)
        command = self.command_problem(env)
        if command is not None:
            return GuardResults(command_problem=command)
        if effective_method(self.policy, kind)[0] == RestartMethod.STATIC_POD:
            return GuardResults(kubelet_problem=self.edges.kubelet_problem())
        return GuardResults()

    def peer_problem(self) -> Optional[str]:
        timeout = min(CALL_TIMEOUT, self.policy.command_timeout.total_seconds())
        for peer in self.policy.peers:
            result = self.edges.peer_readyz(
                peer, timeout, self.policy.peer_ca, self.policy.peer_credentials
            )
            if not result.ok:
                return f"peer {peer} not ready: {result.detail}"
            if result.status in (401, 403) and peer not in self._unreadable_peers:
                # Said once per peer while the agent runs, not at every restart.
                self._unreadable_peers.add(peer)
                self.journal.send(f"peer {peer}: {result.detail}", PRIORITY_NOTICE, {})
        return None

    def command_problem(self, env: Dict[str, str]) -> Optional[str]:
        if not self.policy.blocking_command:
            return None
        result = self.edges.hook(
            self.policy.blocking_command, env, self.policy.command_timeout.total_seconds()
        )
        return None if result.ok else f"blocking command said no: {result.detail}"
