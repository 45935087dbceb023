"""Should this target's apiserver be restarted now? Pure.

Assessment + restart policy + restart history + now in, a RestartDecision
with a reason code out. Reasons, in order of precedence: disabled,
unknown-expiry, not-due, too-soon, expired, outside-window, due. Guards
(peers, blocking command, the kubelet for static pods, lease) are looked at
only when the answer is "restart", and can turn it into blocked-peer,
blocked-command, kubelet-down or lease-held.
The same words go to the journal, to STATUS= and to `plan`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Optional, Sequence

from agent.config.types import RestartConfig
from agent.judge.window import MaintenanceWindow, describe_start, next_opening_of
from agent.model import Assessment, Source, State
from agent.timefmt import format_utc_minutes


class Reason(str, Enum):
    DISABLED = "disabled"
    UNKNOWN_EXPIRY = "unknown-expiry"
    NOT_DUE = "not-due"
    TOO_SOON = "too-soon"
    EXPIRED = "expired"
    OUTSIDE_WINDOW = "outside-window"
    DUE = "due"
    BLOCKED_PEER = "blocked-peer"
    BLOCKED_COMMAND = "blocked-command"
    KUBELET_DOWN = "kubelet-down"
    LEASE_HELD = "lease-held"


@dataclass(frozen=True)
class Opening:
    """The next time a restart may start: a window (shifted by this node's
    random delay) and how to say it ("Sun 02:00 Europe/Berlin")."""

    start: datetime
    end: datetime
    text: str


@dataclass(frozen=True)
class RestartDecision:
    target: str
    restart: bool
    reason: Reason
    message: str  # one line, for the journal, STATUS= and `plan`
    due_at: Optional[datetime]  # when less than before_expiry is left
    next_opening: Optional[Opening]

    @property
    def status(self) -> str:
        """The restart part of STATUS=, or "" when there is nothing to say."""
        if self.reason in (Reason.DISABLED, Reason.NOT_DUE):
            return ""
        return self.message


@dataclass(frozen=True)
class GuardResults:
    """What the guards found; None = no objection."""

    peer_problem: Optional[str] = None
    command_problem: Optional[str] = None
    kubelet_problem: Optional[str] = None  # static pods: nobody would start it again
    lease_holder: Optional[str] = None


def node_delay(node: str, window_start: datetime, random_delay: timedelta) -> timedelta:
    """Given the node, a window occurrence and the configured random delay, return
    this node's delay into that occurrence: random across nodes, the same on
    every check (no state needed, and no thundering herd)."""
    seconds = int(random_delay.total_seconds())
    if seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{node}|{window_start.isoformat()}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds)


def node_opening(
    windows: Sequence[MaintenanceWindow], random_delay: timedelta, node: str, now: datetime
) -> Optional[Opening]:
    """Given the windows, the random delay, the node and now, return this
    node's opening: the window occurrence that contains now or comes next
    (`window.next_opening_of`), its start moved by this node's delay (at most
    half the occurrence, so every node still gets a real chance)."""
    found = next_opening_of(windows, now)
    if found is None:
        return None
    start, end, window = found
    shifted = start + min(node_delay(node, start, random_delay), (end - start) / 2)
    return Opening(shifted, end, describe_start(shifted, window))


def decide(
    assessment: Assessment,
    policy: RestartConfig,
    last_restart: Optional[datetime],
    node: str,
    now: datetime,
) -> RestartDecision:
    """Given a target's assessment, the restart policy, when this target was last
    restarted (an intent written counts), the node name and now, return the
    decision and its reason."""
    target = assessment.target

    def decision(
        restart: bool,
        reason: Reason,
        message: str,
        due_at: Optional[datetime] = None,
        opening: Optional[Opening] = None,
    ) -> RestartDecision:
        return RestartDecision(target, restart, reason, message, due_at, opening)

    if not policy.enabled or not policy.applies_to(target):
        return decision(False, Reason.DISABLED, "restart disabled")
    if assessment.source is not Source.PROBE or assessment.not_after is None:
        # An estimate from the start time, or nothing: never restart blind.
        return decision(
            False, Reason.UNKNOWN_EXPIRY, "no restart: the served certificate could not be read"
        )
    due_at = assessment.not_after - policy.before_expiry
    opening = node_opening(policy.windows, policy.random_delay, node, now)
    if now < due_at:
        return decision(
            False,
            Reason.NOT_DUE,
            f"restart not due before {format_utc_minutes(due_at)}",
            due_at,
            opening,
        )
    if last_restart is not None and now - last_restart < policy.min_interval:
        allowed = last_restart + policy.min_interval
        return decision(
            False,
            Reason.TOO_SOON,
            f"restart held: last restart {format_utc_minutes(last_restart)}, "
            f"min_interval until {format_utc_minutes(allowed)}",
            due_at,
            opening,
        )
    if assessment.state is State.EXPIRED and policy.when_expired == "immediately":
        return decision(
            True, Reason.EXPIRED, "restarting now: certificate expired", due_at, opening
        )
    if opening is None or now < opening.start:
        text = (
            f"restart planned {opening.text}"
            if opening is not None
            else "restart due, but no maintenance window is configured"
        )
        return decision(False, Reason.OUTSIDE_WINDOW, text, due_at, opening)
    return decision(True, Reason.DUE, "restarting now: due and inside the window", due_at, opening)


def apply_guards(decision: RestartDecision, guards: GuardResults) -> RestartDecision:
    """Given a decision to restart and what the guards found, return it unchanged
    or turned into blocked-peer, blocked-command, kubelet-down or lease-held
    (first found wins)."""
    if not decision.restart:
        return decision
    objections = (
        (guards.peer_problem, Reason.BLOCKED_PEER, "{}"),
        (guards.command_problem, Reason.BLOCKED_COMMAND, "{}"),
        (guards.kubelet_problem, Reason.KUBELET_DOWN, "{}"),
        (guards.lease_holder, Reason.LEASE_HELD, "lease held by {}"),
    )
    for found, reason, text in objections:
        if found is not None:
            message = "restart blocked: " + text.format(found)
            return replace(decision, restart=False, reason=reason, message=message)
    return decision
