"""`status`: what the daemon last saw, read from its state file.

Read-only (never moves or rewrites the file), so it works without root and
without the daemon running.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Dict, List, Optional, TextIO

from agent.config.durations import format_days
from agent.state.records import AgentState, TargetState
from agent.text import one_line
from agent.timefmt import format_rfc3339, format_utc_seconds


def _stamp(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else format_rfc3339(moment)


def _ago(moment: datetime, now: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def target_lines(name: str, target: TargetState, now: datetime) -> List[str]:
    lines = [
        f"{name}: {target.state.upper()} (checked {format_utc_seconds(target.checked_at)}, "
        f"{_ago(target.checked_at, now)})",
        f"  {one_line(target.summary, None)}",
    ]
    if target.not_after is not None and target.seconds_left is not None:
        left = (target.not_after - now).total_seconds()
        lines.append(
            f"  not_after {format_utc_seconds(target.not_after)} ({format_days(left)} days "
            f"from now), source {target.source}"
        )
    if target.cert is not None:
        lines.append(
            f"  certificate {one_line(target.cert.subject)}, sha256 {one_line(target.cert.sha256)}"
        )
    if target.process is not None:
        lines.append(
            f"  process PID {target.process.pid} started "
            f"{format_utc_seconds(target.process.started_at)}"
        )
    if target.probe_error:
        lines.append(f"  probe error: {one_line(target.probe_error, None)}")
    if target.learned_lifetime is not None:
        lines.append(
            f"  learned lifetime {format_days(target.learned_lifetime.total_seconds())} days"
        )
    if target.last_alert_at is not None and target.last_alert_state is not None:
        lines.append(
            f"  last journal alert: {target.last_alert_state.upper()} "
            f"{_ago(target.last_alert_at, now)}"
        )
    return lines


def render_status(state: AgentState, path: str, now: datetime) -> str:
    """Given the stored state, its path and now, return the text for people."""
    if not state.targets:
        return f"{path}: no target checked yet\n"
    lines = [f"State from {path}:"]
    for name in sorted(state.targets):
        lines.extend(target_lines(name, state.targets[name], now))
    if state.restarts:
        last = state.restarts[-1]
        lines.append(
            f"last restart record: {last.target} {last.phase} "
            f"{format_utc_seconds(last.at)} {last.outcome or ''} {one_line(last.detail)}".rstrip()
        )
    return "\n".join(lines) + "\n"


def status_json(state: AgentState, path: str) -> Dict[str, Any]:
    targets: Dict[str, Any] = {}
    for name, t in sorted(state.targets.items()):
        targets[name] = {
            "state": t.state,
            "checked_at": _stamp(t.checked_at),
            "source": t.source,
            "summary": t.summary,
            "not_after": _stamp(t.not_after),
            "seconds_left_at_check": None if t.seconds_left is None else int(t.seconds_left),
            "sha256": t.cert.sha256 if t.cert else None,
            "subject": t.cert.subject if t.cert else None,
            "process": None
            if t.process is None
            else {"pid": t.process.pid, "started_at": _stamp(t.process.started_at)},
            "probe_error": t.probe_error,
            "learned_lifetime_seconds": None
            if t.learned_lifetime is None
            else int(t.learned_lifetime.total_seconds()),
            "last_alert_state": t.last_alert_state,
            "last_alert_at": _stamp(t.last_alert_at),
        }
    return {"path": path, "targets": targets, "restarts": len(state.restarts)}


def show_status(config_path: Optional[str], as_json: bool, now: datetime) -> int:
    """Given the --config path, whether to print JSON, and now, print what the
    daemon last saw; return 0, or EXIT_UNKNOWN when there is no readable state.

    Needs only state_dir: when the config cannot be read (mode 0600 for a
    non-root user) or is invalid, the default state_dir is read instead, and
    a note on stderr says so. With as_json every path prints one JSON object.
    """
    from agent.config.loader import ConfigError, default_config, load_config
    from agent.report.output import EXIT_UNKNOWN
    from agent.state.store import read_state, state_path

    note: Optional[str] = None
    try:
        state_dir = load_config(config_path).state_dir
    except ConfigError as error:
        state_dir = default_config().state_dir
        note = (
            f"cannot use the configuration ({error.problems[0]}); "
            f"reading the default state_dir {state_dir} instead"
        )
        print(f"kube-loopback-guard: {note}", file=sys.stderr)
    path = state_path(state_dir)
    try:
        state = read_state(state_dir)
    except FileNotFoundError:
        problem = (
            f"no state yet: {path} does not exist (the daemon, `kube-loopback-guard run`, "
            "writes it after its first check; is kube-loopback-guard.service running?)"
        )
        _problem(problem, path, note, as_json, sys.stdout)
        return EXIT_UNKNOWN
    except (OSError, ValueError) as error:
        problem = f"cannot read {path}: {error}"
        _problem(problem, path, note, as_json, sys.stderr)
        return EXIT_UNKNOWN
    if as_json:
        found = status_json(state, path)
        found["error"] = None
        found["config_note"] = note
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(state, path, now))
    return 0


def _problem(problem: str, path: str, note: Optional[str], as_json: bool, stream: TextIO) -> None:
    if as_json:
        body = {"path": path, "targets": {}, "restarts": 0, "error": problem, "config_note": note}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        print(problem if stream is sys.stdout else f"kube-loopback-guard: {problem}", file=stream)
