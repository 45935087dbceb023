"""Command line: `kube-loopback-guard <verb>`: one parser builder per verb, and `main`.

What a verb does is in `agent.commands` (one `cmd_*` per verb). Only the
named verb's parser is built, and verbs import what they need lazily, so
`--help` and light verbs stay fast.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from datetime import datetime, timedelta


# What a verb needs it imports itself: `--help` loads neither psutil nor the
# config machinery, and `check` only what a check needs.
from agent.commands import (
    cmd_check,
    cmd_config,
    cmd_demo,
    cmd_lease,
    cmd_plan,
    cmd_reload,
    cmd_restart,
    cmd_run,
    cmd_status,
)
from agent.usage import Parser, join_negative_values

if TYPE_CHECKING:
    # What add_subparsers returns; argparse names the class only privately.
    Verbs = argparse._SubParsersAction[Parser]


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


# Argument types: each parses one option's text, importing its parser lazily.


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
    lease.set_defaults(handler=cmd_lease, parser=lease)


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


# The daemon, and a restart that waits minutes for the new apiserver.
LONG_RUNNING = frozenset({"run", "restart"})


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
    # A short verb spends most of its life importing (psutil, ssl,
    # cryptography): the cyclic collector, set off by those allocations, finds
    # nothing to free and costs ~7% of a cold `check`. It stays on for the
    # verbs that live for long.
    collecting = gc.isenabled()
    if args.verb not in LONG_RUNNING:
        gc.disable()
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    finally:
        if collecting:
            gc.enable()
