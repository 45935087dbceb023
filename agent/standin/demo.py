"""`demo`: the real check against a stand-in apiserver, for trying the tool
where there is no cluster."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Callable

from agent.check import run_check
from agent.config.durations import format_duration
from agent.config.types import TargetConfig, Thresholds
from agent.model import LOOPBACK_SERVER_NAME
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe
from agent.report.output import EXIT_UNKNOWN, exit_code, render_json, render_text
from agent.standin.server import StandinApiserver


def run_demo(
    thresholds: Thresholds,
    expires_in: timedelta,
    lifetime: timedelta,
    as_json: bool,
    clock: Callable[[], datetime],
) -> int:
    """Serve an upstream-shaped loopback certificate on 127.0.0.1, check it,
    print the result; return the check's exit code."""
    try:
        server = StandinApiserver(expires_in=expires_in, lifetime=lifetime)
    except ValueError as error:
        # Dates X.509 cannot hold (before 1950): the arguments' fault, not a crash.
        sys.stderr.write(
            f"kube-loopback-guard demo: cannot build the stand-in certificate: {error}\n"
        )
        return EXIT_UNKNOWN
    with server as api:
        # The stand-in runs in this process, so there is no process to find.
        target = TargetConfig(
            name="demo-apiserver",
            process_name="",
            host=api.host,
            port=api.port,
            server_name=LOOPBACK_SERVER_NAME,
            timeout=timedelta(seconds=5),
            lifetime=None,
        )
        if not as_json:
            sys.stdout.write(
                f"Stand-in kube-apiserver on {api.host}:{api.port}, loopback certificate "
                f"lifetime {format_duration(lifetime)}, "
                f"expiring in {format_duration(expires_in)}.\n"
                "The check, as `kube-loopback-guard check` prints it:\n\n"
            )
        report = run_check((target,), thresholds, ProcessFinder(), probe, clock)
    sys.stdout.write(render_json(report) if as_json else render_text(report))
    return exit_code(report)
