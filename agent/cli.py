"""Command line: `kube-loopback-guard <verb>`; one function per verb.

Verbs import what they need lazily, so `--help` and light verbs stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from typing import Callable, List, Optional

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from agent.output import EXIT_UNKNOWN

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
    return datetime.now(timezone.utc)


def _load(args: argparse.Namespace) -> Config:
    path: Optional[str] = args.config
    return load_config(path)


def _config_error(error: ConfigError, code: int) -> int:
    print("kube-loopback-guard: invalid configuration:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    from agent.check import run_check
    from agent.discover import ProcessFinder
    from agent.output import exit_code as plugin_exit
    from agent.output import render_json, render_text
    from agent.probe import probe

    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_UNKNOWN)
    targets = config.targets
    if args.target is not None:
        targets = tuple(t for t in config.targets if t.name == args.target)
        if not targets:
            names = ", ".join(t.name for t in config.targets)
            print(
                f"kube-loopback-guard: no target named {args.target!r} (configured: {names})",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN
    report = run_check(targets, config.thresholds, ProcessFinder(), probe, _now)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    return plugin_exit(report)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_UNKNOWN)
    return run_demo(config.thresholds, args.expires_in, args.lifetime, args.json, _now)


def cmd_config(args: argparse.Namespace) -> int:
    from agent.schema import render_example

    if args.example:
        sys.stdout.write(render_example())
        return 0
    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_CONFIG)
    where = config.path or f"built-in defaults ({DEFAULT_CONFIG_PATH} is absent)"
    print(f"configuration OK: {where}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import Daemon
    from agent.events import MESSAGE_IDS, PRIORITY_ERR, EventKind
    from agent.journal import JOURNAL_SOCKET, open_journal
    from agent.notify import Notifier
    from agent.probe import probe

    # KLG_JOURNAL_SOCKET points the native protocol elsewhere (tests, debugging).
    journal = open_journal(socket_path=os.environ.get("KLG_JOURNAL_SOCKET", JOURNAL_SOCKET))
    try:
        config = _load(args)
    except ConfigError as error:
        journal.send(
            "invalid configuration, not starting: " + "; ".join(error.problems),
            PRIORITY_ERR,
            {"MESSAGE_ID": MESSAGE_IDS[EventKind.CONFIG_REJECTED]},
        )
        return EXIT_CONFIG
    return Daemon(config, args.config, journal, Notifier(), probe).run()


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from agent.state import read_state, state_path
    from agent.status import render_status, status_json

    try:
        config = _load(args)
    except ConfigError as error:
        return _config_error(error, EXIT_CONFIG)
    path = state_path(config.state_dir)
    try:
        state = read_state(config.state_dir)
    except FileNotFoundError:
        print(
            f"no state yet: {path} does not exist (the daemon, `kube-loopback-guard run`, "
            "writes it after its first check; is kube-loopback-guard.service running?)"
        )
        return EXIT_UNKNOWN
    except (OSError, ValueError) as error:
        print(f"kube-loopback-guard: cannot read {path}: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.json:
        sys.stdout.write(json.dumps(status_json(state, path), indent=2) + "\n")
    else:
        sys.stdout.write(render_status(state, path, _now()))
    return 0


def _duration_arg(text: str) -> object:
    from agent.durations import parse_duration

    try:
        # A leading "-" lets `demo --expires-in -3d` show an expired certificate.
        if text.startswith("-"):
            return -parse_duration(text[1:])
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default {DEFAULT_CONFIG_PATH}; built-in defaults if absent)",
    )
    parser = argparse.ArgumentParser(
        prog="kube-loopback-guard",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    check = verbs.add_parser(
        "check",
        parents=[common],
        help="check once, as a monitoring plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        description=(
            "Check every target once and print a monitoring-plugin status line with "
            "perfdata (days left), then one line per target. Exit 0 OK, 1 WARNING, "
            "2 CRITICAL or EXPIRED, 3 UNKNOWN (also for an invalid config). With several "
            "targets the worst state wins."
        ),
    )
    check.add_argument("--target", metavar="NAME", help="check only the target with this name")
    check.add_argument("--json", action="store_true", help="print JSON instead of plugin text")
    check.set_defaults(handler=cmd_check)

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
    demo.add_argument(
        "--expires-in",
        type=_duration_arg,
        default="300d",
        metavar="DURATION",
        help='time left on the stand-in certificate (default "300d"; "-3d" = expired 3 days ago)',
    )
    demo.add_argument(
        "--lifetime",
        type=_duration_arg,
        default="365d",
        metavar="DURATION",
        help='certificate lifetime (default "365d"; v1.33+ uses "1096d")',
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of plugin text")
    demo.set_defaults(handler=cmd_demo)

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
    run.set_defaults(handler=cmd_run)

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
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)

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
    config.set_defaults(handler=cmd_config)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
