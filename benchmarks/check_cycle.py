"""Benchmark: cost and memory of the daemon's check cycle over many cycles.

Runs the daemon's real check cycle (discover → probe → assess → journal →
state file → metrics file) many times in one process against a stand-in
apiserver running as its own process on 127.0.0.1, and reports the agent's
CPU time per cycle and its resident memory as it goes: flat memory means
nothing accumulates over the years an agent runs.

    python benchmarks/check_cycle.py [--cycles 3000] [--key-type rsa]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402

from agent.config.loader import parse_config  # noqa: E402
from agent.daemon import Daemon  # noqa: E402
from agent.observe.probe import probe  # noqa: E402
from agent.report.journal import Journal  # noqa: E402
from agent.report.notify import Notifier  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(cycles: int, port: int) -> None:
    me = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        text = (
            f'state_dir = "{tmp}/state"\n[metrics]\ntextfile = "{tmp}/klg.prom"\n'
            '[[targets]]\nname = "api"\nprocess_name = "kube-apiserver"\n'
            f'host = "127.0.0.1"\nport = {port}\n'
        )
        sink = io.StringIO()
        daemon = Daemon(parse_config(text, "bench.toml"), None, Journal(sink), Notifier({}), probe)
        # The clock moves an hour per cycle, so daily reminders happen too.
        start = datetime.now(timezone.utc)
        ticks = [0]

        def clock() -> datetime:
            ticks[0] += 1
            return start + timedelta(hours=ticks[0])

        daemon.clock = clock
        daemon.check_cycle()  # warm-up: imports, TLS context, first state file
        rss = [me.memory_info().rss]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for cycle in range(1, cycles + 1):
            daemon.check_cycle()
            sink.seek(0)
            sink.truncate()
            if cycle % (cycles // 10) == 0:
                rss.append(me.memory_info().rss)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    mib = [r / 2**20 for r in rss]
    print(
        f"per cycle: {cpu / cycles * 1000:.2f} ms CPU (the agent alone), "
        f"{wall / cycles * 1000:.2f} ms wall"
    )
    print("RSS MiB, after warm-up then at each tenth: " + " ".join(f"{m:.1f}" for m in mib))
    print(f"RSS growth over the last 90%: {mib[-1] - mib[1]:+.2f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--key-type", choices=("rsa", "ec"), default="rsa")
    args = parser.parse_args()
    port = free_port()
    standin = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.standin",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--expires-in=40d",
            f"--key-type={args.key_type}",
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert standin.stdout is not None
        standin.stdout.readline()  # "listening on …"
        print(f"{args.cycles} cycles against a {args.key_type} stand-in (PID {standin.pid})")
        measure(args.cycles, port)
    finally:
        standin.terminate()
        standin.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
