"""Command line: `kube-loopback-guard <verb>`; one function per verb.

Verbs import what they need lazily, so `--help` and light verbs stay fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Union

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from agent.config.loader import ConfigError
    from agent.config.types import Config, TargetConfig
    from agent.state.records import AgentState

# What a verb needs it imports itself: `--help` loads neither psutil nor the
# config machinery, and `check` only what a check needs.
from agent.usage import (
    Parser,
    UnknownTarget,
    invalid_config_summary,
    join_negative_values,
    plugin_unknown,
    unknown_target,
)

if TYPE_CHECKING:
    # What add_subparsers returns; argparse names the class only privately.
    Verbs = argparse._SubParsersAction[Parser]

# sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus= names it.
EXIT_CONFIG = 78

DESCRIPTION = """\
Watch kube-apiserver's in-memory loopback certificate (TLS SNI
apiserver-loopback-client). kube-apiserver creates it at start and never
renews it while it runs (365 days before v1.33, 1096 days from v1.33); when it
expires, the apiserver's calls to itself fail. This tool finds the apiserver
process, reads the certificate it actually serves over loopback and says how
long is left.
"""

EPILOG = f"""\
Configuration: {DEFAULT_CONFIG_PATH} (TOML; built-in defaults when the file is
absent). `kube-loopback-guard config --example` prints every option.
"""


def _now() -> datetime:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _load(args: argparse.Namespace) -> Config:
    from agent.config.loader import load_config

    path: Optional[str] = args.config
    return load_config(path)


def _expires_in(text: str) -> timedelta:
    """demo --expires-in, bounded like a config's lifetime: beyond, the
    stand-in's dates overflow."""
    from agent.config.durations import argument, parse_signed_duration, within
    from agent.model import MAX_LIFETIME

    return argument(within(parse_signed_duration, -MAX_LIFETIME, MAX_LIFETIME))(text)


def _lifetime(text: str) -> timedelta:
    from datetime import timedelta

    from agent.config.durations import argument, parse_duration, within
    from agent.model import MAX_LIFETIME

    return argument(within(parse_duration, timedelta(seconds=1), MAX_LIFETIME))(text)


def _utc_time(text: str) -> datetime:
    from agent.config.durations import argument, parse_utc_time

    return argument(parse_utc_time)(text)


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
    from agent.config.loader import ConfigError, config_notes
    from agent.config.schema import render_example

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


def _add_check(verbs: Verbs, common: Parser) -> None:
    check = verbs.add_parser(
        "check",
        parents=[common],
        help="check once, as a monitoring plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        description=(
            "Check every target once and print a monitoring-plugin status line with "
            "perfdata (days left), then one line per target. Exit 0 OK, 1 WARNING, "
            "2 CRITICAL or EXPIRED, 3 UNKNOWN. Every exit prints the status line first: an "
            "invalid config, a usage error or an unknown --target is UNKNOWN (3) with the "
            "reason on that line and the details on stderr. With several targets the worst "
            "state wins."
        ),
    )
    check.plugin = True
    check.add_argument("--target", metavar="NAME", help="check only the target with this name")
    check.add_argument("--json", action="store_true", help="print JSON instead of plugin text")
    check.set_defaults(handler=cmd_check, parser=check)


def _add_demo(verbs: Verbs, common: Parser) -> None:
    demo = verbs.add_parser(
        "demo",
        parents=[common],
        help="try the check against a stand-in apiserver on 127.0.0.1 (no cluster needed)",
        description=(
            "Start a stand-in kube-apiserver on 127.0.0.1 (random port) that serves a "
            "loopback certificate built exactly like upstream's, run the real check "
            "against it and print the result. Exits like `check`."
        ),
    )
    demo.plugin = True
    demo.add_argument(
        "--expires-in",
        type=_expires_in,
        default="300d",
        metavar="DURATION",
        help='time left on the stand-in certificate (default "300d"; "-3d" = expired 3 days ago)',
    )
    demo.add_argument(
        "--lifetime",
        type=_lifetime,
        default="365d",
        metavar="DURATION",
        help='certificate lifetime (default "365d"; v1.33+ uses "1096d")',
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of plugin text")
    demo.set_defaults(handler=cmd_demo, parser=demo)


def _add_run(verbs: Verbs, common: Parser) -> None:
    run = verbs.add_parser(
        "run",
        parents=[common],
        help="the agent: check every interval, report to journald, systemd and metrics",
        description=(
            "Run as a daemon (Type=notify under systemd): check every target at start "
            "and then every `interval`; log changes and a daily reminder to the journal "
            "with structured fields; keep `systemctl status` current through sd_notify; "
            "write Prometheus textfile metrics if configured; keep what it saw in "
            "state_dir. SIGHUP re-reads the config (an invalid one is rejected and the "
            "old one stays); SIGTERM stops. Exit 78 if the config is invalid at start."
        ),
    )
    run.set_defaults(handler=cmd_run, parser=run)


def _add_plan(verbs: Verbs, common: Parser) -> None:
    plan = verbs.add_parser(
        "plan",
        parents=[common],
        help="show the restart decision per target, and why (changes nothing)",
        description=(
            "Check every target and show the restart decision with its reason code "
            "(disabled, unknown-expiry, not-due, too-soon, expired, outside-window, due, "
            "blocked-peer, blocked-command, lease-held), the next maintenance window and "
            "the last restart. When the decision is to restart now, the guards (peers' "
            "/readyz, blocking_command, who holds the lease) are asked, without taking "
            "the lease. Changes nothing."
        ),
    )
    plan.add_argument("--target", metavar="NAME", help="only the target with this name")
    plan.add_argument(
        "--at",
        type=_utc_time,
        metavar="TIME",
        help="decide as if it were TIME (RFC 3339, e.g. 2026-12-06T02:30:00+01:00); "
        "guards are not asked",
    )
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(handler=cmd_plan, parser=plan)


def _add_restart(verbs: Verbs, common: Parser) -> None:
    restart = verbs.add_parser(
        "restart",
        parents=[common],
        help="restart the apiserver now if the decision says so (or --force), verified",
        description=(
            "Check, decide, and when the decision is to restart, do what the daemon does: "
            "write the intent to the state file, take the lease, ask the guards, run "
            "pre_hook, restart by the configured method, verify (new process, later "
            "certificate, /readyz ok) within ready_timeout, run post_hook, release the "
            "lease. Exit 0 restarted and verified, 1 nothing done (the reason is "
            "printed), 2 the restart failed."
        ),
    )
    restart.add_argument("--target", metavar="NAME", help="only the target with this name")
    restart.add_argument(
        "--force",
        action="store_true",
        help="restart even if not due, outside the windows or within min_interval "
        "(guards still apply; never when the certificate cannot be read or restart is disabled)",
    )
    restart.add_argument("--dry-run", action="store_true", help="decide and log, never act")
    restart.set_defaults(handler=cmd_restart, parser=restart)


def _add_lease(verbs: Verbs, common: Parser) -> None:
    lease = verbs.add_parser(
        "lease",
        parents=[common],
        help="release the restart lease this node holds after a failed restart",
        description=(
            "After a failed or unverified restart the agent keeps the [restart.lease] "
            "Lease, so no other master restarts while this one is down; it releases it "
            "by itself once this node's apiserver is verified healthy with a renewed "
            "certificate. `lease release` releases it now, when a person has dealt with "
            "the failure (the daemon stops renewing it once it sees it released). "
            "Exit 0 released, 1 not held by this node, 2 the API server "
            "could not be asked."
        ),
    )
    lease.add_argument("action", choices=["release"], help="what to do with the lease")
    lease.set_defaults(handler=cmd_lease)


def _add_status(verbs: Verbs, common: Parser) -> None:
    status = verbs.add_parser(
        "status",
        parents=[common],
        help="show what the daemon last saw (from its state file; no root needed)",
        description=(
            "Print what the daemon last saw per target and when, read from "
            "<state_dir>/state.json. Works without root and without the daemon "
            "running. Exit 3 when there is no state yet."
        ),
    )
    status.add_argument("--json", action="store_true", help="print JSON, on every path")
    status.set_defaults(handler=cmd_status, parser=status)


def _add_reload(verbs: Verbs, common: Parser) -> None:
    reload = verbs.add_parser(
        "reload",
        parents=[common],
        help="validate the config, then tell the running daemon to re-read it",
        description=(
            "What `systemctl reload kube-loopback-guard` runs (ExecReload=): validate the "
            "configuration as `config` does and, when it is valid, send SIGHUP to the daemon "
            "($MAINPID, set by systemd, or --pid). Exit 0 when signalled, 78 when the "
            "configuration is invalid (nothing is signalled; the journal records the "
            "rejection), 1 when there is no daemon to signal. A drop-in that adds --config "
            "to ExecStart= must add it to ExecReload= too."
        ),
    )
    reload.add_argument(
        "--pid", type=int, metavar="PID", help="the daemon's PID (default $MAINPID)"
    )
    reload.set_defaults(handler=cmd_reload, parser=reload)


def _add_config(verbs: Verbs, common: Parser) -> None:
    config = verbs.add_parser(
        "config",
        parents=[common],
        help="validate the config, or print the documented example",
        description=(
            "Validate the configuration and report every problem with its file, key and "
            "value (exit 78 when invalid), or print the documented example config."
        ),
    )
    config.add_argument(
        "--example", action="store_true", help="print every option with its default"
    )
    config.set_defaults(handler=cmd_config, parser=config)


# Each verb's parser, in the order `--help` lists them.
VERBS: Dict[str, Callable[[Verbs, Parser], None]] = {
    "check": _add_check,
    "demo": _add_demo,
    "run": _add_run,
    "plan": _add_plan,
    "restart": _add_restart,
    "lease": _add_lease,
    "status": _add_status,
    "reload": _add_reload,
    "config": _add_config,
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """Return the whole command line's parser; given a verb (`only`), one
    that knows just that verb: it parses that verb's command lines alike, and
    a cold `check` need not build the seven others."""
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default {DEFAULT_CONFIG_PATH}; built-in defaults if absent)",
    )
    parser = Parser(
        prog="kube-loopback-guard",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    for name, add in VERBS.items():
        if only is None or name == only:
            add(verbs, common)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    words = join_negative_values(sys.argv[1:] if argv is None else list(argv))
    # A command line starting with a verb needs only that verb's parser; any
    # other (--help, --version, no verb, an unknown one) gets the whole CLI's.
    verb = words[0] if words and words[0] in VERBS else None
    parser = build_parser(verb)
    args, extras = parser.parse_known_args(words)
    if extras:
        # The verb's parser, so `check --bogus` is the plugin's UNKNOWN.
        verb_parser: argparse.ArgumentParser = args.parser
        verb_parser.error("unrecognized arguments: " + " ".join(extras))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
