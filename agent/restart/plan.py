"""`plan` and `restart`: the restart decision for people, and acting on it by hand.

`plan` changes nothing: it checks, decides, and (when the decision is to
restart now) asks the guards without taking the lease. `restart` runs the
same decision and, when it says so (or with --force), the same careful
sequence the daemon uses.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent.config.durations import format_days, format_duration
from agent.config.types import Config, RestartConfig, RestartMethod
from agent.judge.decide import GuardResults, Reason, RestartDecision, apply_guards, decide
from agent.model import CheckReport, TargetReport
from agent.state.records import AgentState, last_restart
from agent.timefmt import format_rfc3339, format_utc_minutes


@dataclass(frozen=True)
class TargetPlan:
    item: TargetReport
    decision: RestartDecision
    last_restart: Optional[datetime]
    guards: Optional[GuardResults]  # None when not asked


def node_name() -> str:
    return socket.gethostname()


def make_plans(
    report: CheckReport,
    config: Config,
    state: AgentState,
    node: str,
    now: datetime,
    ask_guards: Optional[Callable[[TargetReport], GuardResults]] = None,
) -> List[TargetPlan]:
    """Given a check, the config, the stored state, the node and now, return
    each target's decision (with the guards' answers when asked)."""
    plans = []
    for item in report.targets:
        last = last_restart(state, item.target.name, now)
        decision = decide(item.assessment, config.restart, last, node, now)
        guards = None
        if decision.restart and ask_guards is not None:
            guards = ask_guards(item)
            decision = apply_guards(decision, guards)
        plans.append(TargetPlan(item, decision, last, guards))
    return plans


def _utc(moment: datetime) -> str:
    return format_utc_minutes(moment)


def _policy_lines(policy: RestartConfig) -> List[str]:
    if not policy.enabled:
        return ["restart: disabled ([restart] enabled = false): monitoring only"]
    method = {
        RestartMethod.SYSTEMD: f"systemd (systemctl restart {policy.unit})",
        RestartMethod.STATIC_POD: (
            "static-pod (crictl stop the container, else SIGTERM; kubelet starts it)"
        ),
        RestartMethod.COMMAND: "command " + " ".join(policy.command),
        RestartMethod.SIGNAL: "signal (SIGTERM to the verified PID; its supervisor respawns it)",
        RestartMethod.AUTO: "auto (each apiserver's own way, by its kind)",
    }[policy.method]
    lines = [
        f"restart: {method}{' [DRY RUN]' if policy.dry_run else ''}; "
        f"due {format_duration(policy.before_expiry)} before expiry; "
        f"min_interval {format_duration(policy.min_interval)}; "
        f"when expired: {policy.when_expired}",
        "windows: " + ("; ".join(str(w) for w in policy.windows) or "none"),
    ]
    if policy.peers:
        lines.append("peers: " + ", ".join(policy.peers))
    if policy.lease is not None:
        lease = policy.lease
        lines.append(f"lease: {lease.namespace}/{lease.name} for {format_duration(lease.duration)}")
    return lines


def render_plans(plans: Sequence[TargetPlan], policy: RestartConfig) -> str:
    lines = _policy_lines(policy)
    for plan in plans:
        a = plan.item.assessment
        d = plan.decision
        left = "unknown" if a.seconds_left is None else f"{format_days(a.seconds_left)} days left"
        lines.append(f"{plan.item.target.name}: {a.state.name}, {left}")
        if a.error:  # why the expiry is unknown or only estimated
            lines.append(f"  {'why unknown' if a.source == 'none' else 'probe failed'}: {a.error}")
        verdict = "RESTART NOW" if d.restart else "no restart"
        lines.append(f"  decision: {verdict} ({d.reason.value}): {d.message}")
        if d.due_at is not None:
            lines.append(f"  due from {_utc(d.due_at)}")
        last = "never" if plan.last_restart is None else _utc(plan.last_restart)
        lines.append(f"  last restart: {last}")
        if d.next_opening is not None:
            o = d.next_opening
            lines.append(f"  next opening: {o.text} ({_utc(o.start)} until {_utc(o.end)})")
        if plan.guards is not None:
            g = plan.guards
            lines.append(
                "  guards: "
                + "; ".join(
                    [
                        f"peers {g.peer_problem or 'ok'}",
                        f"blocking command {g.command_problem or 'ok'}",
                        *([f"kubelet: {g.kubelet_problem}"] if g.kubelet_problem else []),
                        f"lease {'held by ' + g.lease_holder if g.lease_holder else 'free'}",
                    ]
                )
            )
    return "\n".join(lines) + "\n"


def _stamp(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else format_rfc3339(moment)


def plans_json(
    plans: Sequence[TargetPlan], policy: RestartConfig, checked_at: datetime, at: datetime
) -> Dict[str, Any]:
    """Given the plans, the policy, when the certificates were read and the
    time the decisions are for, return `plan --json`: the envelope of
    `check --json`, one entry per target. `next_window` is the window the
    decision refers to: the current one when inside, else the next."""
    targets = []
    for plan in plans:
        d = plan.decision
        opening = d.next_opening
        targets.append(
            {
                "name": plan.item.target.name,
                "state": plan.item.assessment.state.value,
                "not_after": _stamp(plan.item.assessment.not_after),
                "restart": d.restart,
                "reason": d.reason.value,
                "message": d.message,
                "next_window": None
                if opening is None
                else {"start": _stamp(opening.start), "end": _stamp(opening.end)},
                "method": policy.method.value,
                "guards": None
                if plan.guards is None
                else {
                    "peer_problem": plan.guards.peer_problem,
                    "command_problem": plan.guards.command_problem,
                    "kubelet_problem": plan.guards.kubelet_problem,
                    "lease_holder": plan.guards.lease_holder,
                },
            }
        )
    return {"checked_at": _stamp(checked_at), "at": _stamp(at), "targets": targets}


def forced(decision: RestartDecision) -> RestartDecision:
    """A person asked for the restart: skip due, window and min_interval, never
    the need to read the certificate (the restart could not be verified)."""
    if decision.reason is Reason.UNKNOWN_EXPIRY or decision.reason is Reason.DISABLED:
        return decision
    return replace(
        decision, restart=True, message=f"restarting now: forced by hand ({decision.reason.value})"
    )
