"""A stand-in kube-apiserver as a process: `python -m agent.standin --secure-port 6443`.

It accepts kube-apiserver's flags (ignoring those it does not model) and
generates a new loopback pair at each start, as upstream does; started
through a symlink named kube-apiserver, it is an apiserver process to the
agent. `--anonymous-auth=false` is kube-apiserver's own flag; `--livez`,
`--readyz` and the date options pick what the stand-in models.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime, timedelta, timezone
from typing import Optional, Sequence

from agent.config.durations import argument, parse_signed_duration, parse_utc_time
from agent.model import DEFAULT_SECURE_PORT
from agent.standin.server import LIVEZ_MODES, READYZ_MODES, StandinApiserver

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an unknown kube-apiserver flag such as --bind must
    # never be taken for a prefix of one of ours.
    parser = argparse.ArgumentParser(
        prog="python -m agent.standin",
        description="Serve a stand-in kube-apiserver in the foreground until SIGTERM or "
        "SIGINT, with a loopback certificate generated at start, as upstream does. "
        "Other kube-apiserver flags are accepted and ignored.",
        allow_abbrev=False,
    )
    parser.add_argument("--secure-port", type=int, default=DEFAULT_SECURE_PORT)
    parser.add_argument(
        "--bind-address",
        default="127.0.0.1",
        help="default 127.0.0.1 (kube-apiserver's is 0.0.0.0; a stand-in stays local)",
    )
    parser.add_argument(
        "--lifetime",
        type=argument(parse_signed_duration),
        default=timedelta(days=365),
        help='default "365d"',
    )
    dates = parser.add_mutually_exclusive_group()
    dates.add_argument(
        "--expires-in", type=argument(parse_signed_duration), help='time left, e.g. "10d", "-3d"'
    )
    dates.add_argument("--not-after", type=argument(parse_utc_time), help="RFC 3339")
    dates.add_argument(
        "--started-at",
        "--generated-at",  # its name before the CN time and the start came apart
        dest="started_at",
        type=argument(parse_utc_time),
        help="RFC 3339; default: now, as at every upstream start (NotBefore is an hour earlier)",
    )
    parser.add_argument("--key-type", choices=("rsa", "ec"), default="rsa")
    parser.add_argument(
        "--livez",
        choices=LIVEZ_MODES,
        default="auto",
        help="the loopback-serving-certificate check: auto (as v1.36+), ok, failed, "
        "or pre-1.36 (no such check)",
    )
    parser.add_argument("--readyz", choices=READYZ_MODES, default="ok")
    parser.add_argument(
        "--anonymous-auth",
        choices=("true", "false"),
        default="true",
        help="false: 401 to every request, as kube-apiserver's flag (default true)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Given kube-apiserver-like arguments (sys.argv[1:] when None), serve a
    stand-in apiserver until SIGTERM or SIGINT; return 0, or 1 when the
    address cannot be bound.

    Each start generates a new loopback pair (generated now unless a date
    option says otherwise), like a real apiserver start. Once listening it
    prints one line, "listening on HOST:PORT", to stdout. Arguments it does
    not know are ignored, so it can stand where kube-apiserver's command line
    is expected. argparse exits with 2 for a bad value of a known option.
    """
    parser = _parser()
    args, _ignored = parser.parse_known_args(argv)
    started_at = args.started_at
    if args.expires_in is None and args.not_after is None and started_at is None:
        started_at = datetime.now(timezone.utc)
    stop = {signal.SIGTERM, signal.SIGINT}
    # Blocked before any thread starts, so every thread inherits the mask and
    # sigwait below is the one place the signal arrives: no handler races.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        server = StandinApiserver(
            host=args.bind_address,
            port=args.secure_port,
            expires_in=args.expires_in,
            not_after=args.not_after,
            started_at=started_at,
            lifetime=args.lifetime,
            key_type=args.key_type,
            livez=args.livez,
            readyz=args.readyz,
            anonymous_auth=args.anonymous_auth == "true",
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        server.start()
    except OSError as error:
        sys.stderr.write(f"cannot listen on {args.bind_address}:{args.secure_port}: {error}\n")
        return 1
    try:
        host = f"[{server.host}]" if ":" in server.host else server.host
        sys.stdout.write(f"listening on {host}:{server.port}\n")
        sys.stdout.flush()
        signal.sigwait(stop)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
