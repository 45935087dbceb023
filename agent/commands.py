"""What each verb does: `kube-loopback-guard <verb>` runs one `cmd_*` here.

`agent.cli` owns the command line (the parsers and `main`); this module owns
the verbs' work. Each verb imports what it needs itself, so `--help` and light
verbs stay fast and a `check` loads only what a check needs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Optional, Tuple, Union

from agent.config import DEFAULT_CONFIG_PATH
from agent.usage import (
    EXIT_CONFIG,
    UnknownTarget,
    invalid_config_summary,
    plugin_unknown,
    unknown_target,
)

if TYPE_CHECKING:
    from datetime import datetime

    from agent.config.loader import ConfigError
    from agent.config.types import Config, TargetConfig
    from agent.state.records import AgentState


def _now() -> datetime:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _load(args: argparse.Namespace) -> Config:
    from agent.config.loader import load_config

    path: Optional[str] = args.config
    return load_config(path)


def _config_error(error: ConfigError, code: int) -> int:
    print("kube-loopback-guard: invalid configuration:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    from agent.check import only_target, run_check
    from agent.config.loader import ConfigError
    from agent.observe.discover import ProcessFinder
    from agent.observe.probe import probe
    from agent.report.output import exit_code as plugin_exit
    from agent.report.output import render_json, render_text

    try:
        config = _load(args)
    except ConfigError as error:
        return plugin_unknown(args, invalid_config_summary(error), error.problems)
    try:
        targets = _select(config, args.target)
    except UnknownTarget as error:
        return plugin_unknown(args, str(error), [str(error)])
    try:
        report = only_target(
            run_check(targets, config.thresholds, ProcessFinder(), probe, _now), args.target
        )
        text = render_json(report) if args.json else render_text(report)
    except Exception as error:  # a bug: still a status line, never "(null)"
        reason = f"internal error: {type(error).__name__}: {error}"
        return plugin_unknown(args, reason, [reason])
    sys.stdout.write(text)
    return plugin_exit(report)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.config.durations import format_duration
    from agent.config.loader import ConfigError
    from agent.standin.demo import run_demo

    try:
        config = _load(args)
    except ConfigError as error:
        return plugin_unknown(args, invalid_config_summary(error), error.problems)
    if args.lifetime.total_seconds() <= 0 or args.expires_in > args.lifetime:
        message = (
            f"--expires-in {format_duration(args.expires_in)} must not exceed "
            f"--lifetime {format_duration(args.lifetime)} (a positive duration)"
        )
        return plugin_unknown(args, message, [message])
    return run_demo(config.thresholds, args.expires_in, args.lifetime, args.json, _now)


def cmd_config(args: argparse.Namespace) -> int:
    from agent.config.example import render_example
    from agent.config.loader import ConfigError, config_notes

    if args.example:
        sys.stdout.write(render_example())
        return 0
    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_CONFIG)
    where = config.path or f"built-in defaults ({DEFAULT_CONFIG_PATH} is absent)"
    print(f"configuration OK: {where}")
    for note in config_notes(config):
        print(note)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.config.loader import ConfigError
    from agent.daemon import Daemon
    from agent.observe.probe import probe
    from agent.report.events import PRIORITY_ERR, EventKind, send_event
    from agent.report.journal import open_journal
    from agent.report.notify import Notifier

    journal = open_journal()
    try:
        config = _load(args)
    except ConfigError as error:
        send_event(
            journal,
            EventKind.CONFIG_REJECTED,
            PRIORITY_ERR,
            "invalid configuration, not starting: " + "; ".join(error.problems),
        )
        return EXIT_CONFIG
    return Daemon(config, args.config, journal, Notifier(), probe).run()


def cmd_status(args: argparse.Namespace) -> int:
    from agent.report.status import show_status

    return show_status(args.config, args.json, _now())


def cmd_reload(args: argparse.Namespace) -> int:
    from agent.reload import reload_daemon
    from agent.report.journal import open_journal

    return reload_daemon(args.config, args.pid, open_journal())


def _stored_state(config: Config) -> AgentState:
    from agent.state.records import AgentState
    from agent.state.store import read_state

    try:
        return read_state(config.state_dir)
    except FileNotFoundError:
        return AgentState.empty()


def _prepare(
    args: argparse.Namespace,
) -> Union[int, Tuple[Config, Tuple[TargetConfig, ...], AgentState]]:
    """The config, the selected targets and the stored state; or the exit code."""
    from agent.config.loader import ConfigError
    from agent.report.output import EXIT_UNKNOWN

    try:
        config = _load(args)
        return config, _select(config, args.target), _stored_state(config)
    except ConfigError as error:
        return _config_error(error, EXIT_CONFIG)
    except UnknownTarget as error:
        return unknown_target(error)
    except (OSError, ValueError) as error:
        print(f"kube-loopback-guard: cannot read the state: {error}", file=sys.stderr)
        return EXIT_UNKNOWN


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from agent.check import only_target, run_check
    from agent.observe.discover import ProcessFinder
    from agent.observe.probe import probe
    from agent.report.journal import open_journal
    from agent.restart.edges import RestartEdges
    from agent.restart.plan import make_plans, node_name, plans_json, render_plans
    from agent.restart.restarter import Restarter

    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    config, targets, state = prepared
    checked_at = _now()
    at: datetime = args.at or checked_at
    # The certificate is read now; its state, the days left and the decision
    # are judged at `at`.
    report = only_target(
        run_check(targets, config.thresholds, ProcessFinder(), probe, lambda: at), args.target
    )
    node = node_name()
    ask = None
    if args.at is None:
        edges = RestartEdges(probe)
        ask = Restarter(config, open_journal(), node, _now, edges).read_only_guards
    plans = make_plans(report, config, state, node, at, ask)
    if args.json:
        document = plans_json(plans, config.restart, checked_at, at)
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(render_plans(plans, config.restart))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from agent.check import only_target, run_check
    from agent.observe.discover import ProcessFinder
    from agent.observe.probe import probe
    from agent.report.journal import open_journal
    from agent.restart.edges import RestartEdges
    from agent.restart.plan import forced, make_plans, node_name
    from agent.restart.restarter import Restarter

    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    config, targets, state = prepared
    if args.dry_run:
        config = replace(config, restart=replace(config.restart, dry_run=True))
    report = only_target(
        run_check(targets, config.thresholds, ProcessFinder(), probe, _now), args.target
    )
    node = node_name()
    restarter = Restarter(config, open_journal(), node, _now, RestartEdges(probe))
    for plan in make_plans(report, config, state, node, _now()):
        decision = forced(plan.decision) if args.force else plan.decision
        name = plan.item.target.name
        if not decision.restart:
            print(f"{name}: no restart ({decision.reason.value}): {decision.message}")
            continue
        outcome = restarter.run(plan.item, decision, force=args.force, seen_last=plan.last_restart)
        # Some details already start with the name (the dry run's journal text).
        detail = outcome.detail
        print(detail if detail.startswith(f"{name}: ") else f"{name}: {detail}")
        if outcome.succeeded is None:
            return 1
        return 0 if outcome.succeeded else 2
    return 1


def cmd_lease(args: argparse.Namespace) -> int:
    from agent.config.loader import ConfigError
    from agent.kube.kubeconfig import KubeconfigError
    from agent.kube.lease import LeaseError
    from agent.restart.lease_holder import open_lease
    from agent.restart.plan import node_name

    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_CONFIG)
    try:
        lease = open_lease(config.restart, node_name())
        if lease is None:
            print("no [restart.lease] is configured: there is no lease to release")
            return 1
        where = f"lease {lease.namespace}/{lease.name}"
        holder = lease.holder()
        if holder != lease.identity:
            print(
                f"{where} is not held by {lease.identity} (holder: {holder or 'nobody'}); "
                "nothing released"
            )
            return 1
        lease.release(_now())
    except (LeaseError, KubeconfigError, ValueError) as error:
        print(f"kube-loopback-guard: {error}", file=sys.stderr)
        return 2
    print(f"{where} released (was held by {lease.identity}): another master may restart now")
    return 0


def _select(config: Config, name: Optional[str]) -> tuple[TargetConfig, ...]:
    if name is None:
        return config.targets
    targets = tuple(t for t in config.targets if t.name == name)
    if not targets:
        # A discovered apiserver's name is known only after discovery: keep
        # the targets standing for all, and only_target picks it from the report.
        targets = tuple(t for t in config.targets if t.discovers_all)
    if not targets:
        names = ", ".join(t.name for t in config.targets)
        raise UnknownTarget(f"--target: no target named {name!r} (configured: {names})")
    return targets
