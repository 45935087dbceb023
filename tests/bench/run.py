"""kube-loopback-guard's benchmark: our check side by side with what operators
would run instead, against one stand-in apiserver on 127.0.0.1, plus the costs
of a cold `check`, of discovery, and of the daemon over time.

    python tests/bench/run.py [--quick] [--json FILE]

Sides measured against each other run in interleaved rounds (one sample of
each side per round, in rotating order), so that noise from a busy machine
hits all of them alike. `--quick` (under 2 minutes; CI runs it) takes fewer
samples and watches the daemon for 20 s instead of 60 s. Figures are printed,
never asserted: this is a benchmark, not a timed test. Every process it starts
is stopped by its PID.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE)]

import sides  # noqa: E402
from sides import Processes, Sample  # noqa: E402


def interleaved(samples: Dict[str, Sample], rounds: Dict[str, int]) -> Dict[str, List[float]]:
    """Run each side `rounds[side]` times, one sample per side per round in a
    rotating order (sides with fewer rounds are spread evenly); return the
    wall times in ms."""
    times: Dict[str, List[float]] = {name: [] for name in samples}
    names = list(samples)
    most = max(rounds.values())
    for round_index in range(most):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            every = most / rounds[name]
            if int(round_index / every) * every != round_index and rounds[name] != most:
                continue
            if len(times[name]) >= rounds[name]:
                continue
            started = time.perf_counter()
            samples[name]()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def p50(values: List[float]) -> float:
    return statistics.median(values)


def p99(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def write_config(path: str, port: int, targets: int = 1, extra: str = "") -> str:
    """A config of `targets` targets probing the stand-in, each discovering
    our named process (so discovery finds one process, as on a master)."""
    with open(path, "w") as handle:
        handle.write(f'state_dir = "{os.path.dirname(path)}/state"\n{extra}\n')
        for index in range(targets):
            handle.write(
                f'[[targets]]\nname = "api{index}"\nprocess_name = "{sides.APISERVER_NAME}"\n'
                f'host = "127.0.0.1"\nport = {port}\ntimeout = "5s"\n'
            )
    return path


# --- groups of figures ----------------------------------------------------------


def latency(port: int, processes: Processes, quick: bool, out: Dict[str, object]) -> None:
    fast, medium, slow = (60, 10, 3) if quick else (300, 40, 8)
    samples: Dict[str, Sample] = {
        "check": sides.in_process_check(port),
        "handshake": sides.handshake(port),
        "handshake_livez": sides.handshake_livez(port),
    }
    rounds = {"check": fast, "handshake": fast, "handshake_livez": fast}
    optional = {
        "openssl_pipeline": (sides.openssl_pipeline, medium),
        "check_http": (sides.check_http, medium),
        "check_ssl_cert": (sides.check_ssl_cert, slow),
    }
    for name, (make, count) in optional.items():
        try:
            sample = make(port)
        except sides.NotWorking as error:
            out[f"{name}_not_working"] = str(error)[:200]
            continue
        if sample is not None:
            samples[name], rounds[name] = sample, count
    blackbox: Optional[sides.Blackbox] = None
    if sides.Blackbox.installed():
        blackbox = sides.Blackbox(processes, port)
        samples["blackbox_probe"], rounds["blackbox_probe"] = blackbox.probe, fast
    for sample in samples.values():  # warm-up: imports, TLS contexts, page cache
        sample()
    times = interleaved(samples, rounds)
    out["check_p50_ms"] = p50(times["check"])
    out["check_p99_ms"] = p99(times["check"])
    for name, values in times.items():
        if name != "check":
            out[f"{name}_p50_ms"] = p50(values)
    if blackbox is not None:
        out["blackbox_rss_mib"] = blackbox.rss_mib()
        processes.stop(blackbox.process)
        blackbox.close()


def cold(port: int, tmp: str, quick: bool, out: Dict[str, object]) -> None:
    config = write_config(os.path.join(tmp, "cold.toml"), port)
    samples = sides.cold_commands(config)
    count = 12 if quick else 40
    times = interleaved(samples, {name: count for name in samples})
    for name, values in times.items():
        out[name] = p50(values)
    many = write_config(os.path.join(tmp, "fifty.toml"), port, targets=50)
    fifty = sides.command([sys.executable, "-m", "agent", "check", "--config", many])
    out["targets_50_ms"] = p50(interleaved({"t": fifty}, {"t": 3 if quick else 10})["t"])


def discovery(processes: Processes, quick: bool, out: Dict[str, object]) -> None:
    from agent.observe.discover import ProcessFinder

    # Enough processes that the per-process cost shows; all stopped afterwards.
    extra = [processes.start(["sleep", "600"], stdout=None) for _ in range(200 if quick else 500)]
    try:
        count = sum(1 for name in os.listdir("/proc") if name.isdigit())

        name = sides.APISERVER_NAME

        def cold_scan() -> None:
            assert ProcessFinder().find(name, 6443).process is not None

        def plain_scan() -> None:
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                for leaf in ("comm", "cmdline"):
                    try:
                        with open(f"/proc/{name}/{leaf}", "rb") as handle:
                            handle.read()
                    except OSError:
                        pass

        warm_finder = ProcessFinder()
        warm_finder.find(name, 6443)

        def warm_scan() -> None:
            assert warm_finder.find(name, 6443).process is not None

        rounds = 10 if quick else 30
        times = interleaved(
            {"cold": cold_scan, "plain": plain_scan, "warm": warm_scan},
            {"cold": rounds, "plain": rounds, "warm": rounds},
        )
        out["discover_processes"] = count
        out["discover_ms_per_1000_procs"] = p50(times["cold"]) / count * 1000
        out["discover_floor_ms_per_1000_procs"] = p50(times["plain"]) / count * 1000
        out["discover_warm_ms"] = p50(times["warm"])
    finally:
        for process in extra:
            processes.stop(process)


def growth(port: int, tmp: str, quick: bool, out: Dict[str, object]) -> None:
    """The daemon's real check cycle many times in this process, with a clock
    a minute ahead per cycle (hourly state rewrites, daily reminders)."""
    import psutil

    from agent.config.loader import load_config
    from agent.daemon import Daemon
    from agent.observe.probe import probe
    from agent.report.journal import Journal
    from agent.report.notify import Notifier

    path = write_config(
        os.path.join(tmp, "growth.toml"), port, extra=f'[metrics]\ntextfile = "{tmp}/klg.prom"'
    )
    sink = io.StringIO()
    start, ticks = datetime.now(timezone.utc), [0]

    def clock() -> datetime:
        ticks[0] += 1
        return start + timedelta(minutes=ticks[0])

    daemon = Daemon(load_config(path), path, Journal(sink), Notifier({}), probe, clock)
    daemon.load_state(daemon.config.state_dir)
    cycles = 2000 if quick else 10_000
    me = psutil.Process()
    for _ in range(100):  # warm-up
        daemon.check_cycle()
    before = me.memory_info().rss
    cpu = time.process_time()
    for cycle in range(cycles):
        daemon.check_cycle()
        if cycle % 500 == 0:
            sink.seek(0)
            sink.truncate()
    out["check_cycle_cpu_ms"] = (time.process_time() - cpu) / cycles * 1000
    out["rss_growth_checks"] = cycles
    out["rss_growth_kib_10k_checks"] = (me.memory_info().rss - before) / 1024 * 10_000 / cycles


def distro_python() -> Optional[str]:
    """/usr/bin/python3 when it has the distribution's psutil, cryptography and
    sdnotify: what the .deb runs on (its cryptography links the system OpenSSL)."""
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        return None
    probe = [python, "-c", "import psutil, cryptography.x509, sdnotify"]
    found = sides.subprocess.run(probe, capture_output=True, check=False)
    return python if found.returncode == 0 else None


def daemon(port: int, tmp: str, processes: Processes, quick: bool, out: Dict[str, object]) -> None:
    """`kube-loopback-guard run` at a 1 s interval: its RSS, and its CPU per
    check after start-up (the schedule runs exactly one check per interval).
    Meanwhile this process runs the same check once a second, so both see
    the same machine: that is `check_cpu_ms`."""
    path = write_config(
        os.path.join(tmp, "daemon.toml"),
        port,
        extra=f'interval = "1s"\n[metrics]\ntextfile = "{tmp}/daemon.prom"',
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["KLG_JOURNAL_SOCKET"] = os.path.join(tmp, "no-journald")
    env["PYTHONPATH"] = sides.ROOT
    pythons = {"daemon": sys.executable}
    distro = distro_python()
    if distro is not None:
        pythons["daemon_distro"] = distro
    running = {
        name: processes.start(
            [python, "-m", "agent", "run", "--config", path],
            env=env,
            cwd=sides.ROOT,
            stdout=sides.subprocess.DEVNULL,
            stderr=sides.subprocess.DEVNULL,
        )
        for name, python in pythons.items()
    }
    # The floor under the daemon's RSS: the same interpreter holding only
    # what any such agent must import (psutil, ssl, cryptography.x509).
    for name, python in pythons.items():
        running[f"floor_{name}"] = processes.start(
            [python, "-c", "import psutil, ssl, cryptography.x509, time; time.sleep(600)"],
            env=env,
            cwd=sides.ROOT,
        )
    check = sides.in_process_check(port, process_name=sides.APISERVER_NAME)
    check()
    seconds = 20 if quick else 60
    time.sleep(3)  # start-up and the first checks
    cpu0 = {name: sides.cpu_seconds(p.pid) for name, p in running.items()}
    wall0 = time.monotonic()
    peak = {name: 0.0 for name in running}
    ours: List[float] = []
    while time.monotonic() - wall0 < seconds - 3:
        started = time.thread_time()
        check()
        ours.append((time.thread_time() - started) * 1000)
        time.sleep(max(0.0, 1 - (time.monotonic() - wall0) % 1))
        for name, process in running.items():
            peak[name] = max(peak[name], sides.rss_mib(process.pid))
    wall = time.monotonic() - wall0
    cpu = {name: sides.cpu_seconds(p.pid) - cpu0[name] for name, p in running.items()}
    for process in running.values():
        processes.stop(process)
    out["daemon_seconds"] = seconds
    out["daemon_rss_mib"] = peak["daemon"]
    out["rss_floor_mib"] = peak["floor_daemon"]
    out["daemon_cpu_ms_per_check"] = cpu["daemon"] / wall * 1000  # one check per second
    out["check_cpu_ms"] = statistics.mean(ours)
    if "daemon_distro" in running:
        out["daemon_rss_mib_distro"] = peak["daemon_distro"]
        out["rss_floor_mib_distro"] = peak["floor_daemon_distro"]
        out["daemon_cpu_ms_per_check_distro"] = cpu["daemon_distro"] / wall * 1000


# --- the table ------------------------------------------------------------------

ROWS = [
    ("in-process check p50 / p99", "check_p50_ms", "check_p99_ms", "ms"),
    ("bare TLS handshake (SNI) p50", "handshake_p50_ms", None, "ms"),
    ("handshake + livez GET p50", "handshake_livez_p50_ms", None, "ms"),
    ("openssl s_client | openssl x509 p50", "openssl_pipeline_p50_ms", None, "ms"),
    ("check_http -C (monitoring-plugins) p50", "check_http_p50_ms", None, "ms"),
    ("check_ssl_cert -A p50", "check_ssl_cert_p50_ms", None, "ms"),
    ("blackbox_exporter /probe (tcp+tls) p50", "blackbox_probe_p50_ms", None, "ms"),
    ("blackbox_exporter RSS", "blackbox_rss_mib", None, "MiB"),
    ("cold `kube-loopback-guard check`", "cold_check_ms", None, "ms"),
    ("python -c 'import psutil, ssl, cryptography.x509'", "import_floor_ms", None, "ms"),
    ("one `check` of 50 targets, one server", "targets_50_ms", None, "ms"),
    ("cold discovery per 1,000 processes", "discover_ms_per_1000_procs", None, "ms"),
    ("plain /proc scan per 1,000 processes", "discover_floor_ms_per_1000_procs", None, "ms"),
    ("warm discovery", "discover_warm_ms", None, "ms"),
    ("daemon RSS (1 s interval)", "daemon_rss_mib", None, "MiB"),
    ("daemon RSS, distro python3 + libs (as the .deb)", "daemon_rss_mib_distro", None, "MiB"),
    ("RSS floor: python importing psutil, ssl, x509", "rss_floor_mib", None, "MiB"),
    ("RSS floor, distro python3 + libs", "rss_floor_mib_distro", None, "MiB"),
    ("daemon CPU per check", "daemon_cpu_ms_per_check", None, "ms"),
    ("daemon CPU per check, distro python3", "daemon_cpu_ms_per_check_distro", None, "ms"),
    ("the same check in-process, once a second, CPU", "check_cpu_ms", None, "ms"),
    ("daemon check cycle in-process, CPU (tight loop)", "check_cycle_cpu_ms", None, "ms"),
    ("RSS growth per 10,000 checks", "rss_growth_kib_10k_checks", None, "KiB"),
]

RATIOS = [
    ("check / (handshake + livez)", "check_p50_ms", "handshake_livez_p50_ms", 1.3),
    ("check / openssl pipeline", "check_p50_ms", "openssl_pipeline_p50_ms", None),
    ("check / check_http", "check_p50_ms", "check_http_p50_ms", None),
    ("check / check_ssl_cert", "check_p50_ms", "check_ssl_cert_p50_ms", None),
    ("check / blackbox probe", "check_p50_ms", "blackbox_probe_p50_ms", None),
    ("cold check / import floor", "cold_check_ms", "import_floor_ms", 1.3),
    (
        "discovery / plain scan",
        "discover_ms_per_1000_procs",
        "discover_floor_ms_per_1000_procs",
        1.5,
    ),
    ("daemon CPU / in-process check CPU", "daemon_cpu_ms_per_check", "check_cpu_ms", 1.5),
]


def render(out: Dict[str, object]) -> str:
    lines = []
    for label, key, second, unit in ROWS:
        if key not in out:
            broken = out.get(key.replace("_p50_ms", "") + "_not_working")
            lines.append(f"{label:<52} ({f'not working: {broken}' if broken else 'not installed'})")
            continue
        value = f"{out[key]:.2f}" + (f" / {out[second]:.2f}" if second else "")
        lines.append(f"{label:<52} {value} {unit}")
    lines.append("")
    for label, top, bottom, target in RATIOS:
        if top in out and bottom in out:
            ratio = float(out[top]) / float(out[bottom])  # type: ignore[arg-type]
            goal = f"  (target <= {target})" if target else ""
            lines.append(f"{label:<52} {ratio:.3g}x{goal}")
    for key in ("daemon_rss_mib", "daemon_rss_mib_distro"):
        if key in out:
            lines.append(f"{key:<52} {out[key]:.1f} MiB  (target <= 30)")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, under 2 minutes")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args(argv)
    out: Dict[str, object] = {}
    processes = Processes()
    started = time.monotonic()
    steps: List[Callable[[], None]] = []
    # Installed, the agent has its bytecode (pip and dh_python3 compile it, as
    # they did the peers' libraries); a source tree run with
    # PYTHONDONTWRITEBYTECODE would compile every module in every cold start.
    compileall.compile_dir(os.path.join(sides.ROOT, "agent"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="klg-bench-") as tmp:
        try:
            port = sides.start_standin(processes)
            sides.start_named_process(processes, tmp)
            steps = [
                lambda: latency(port, processes, args.quick, out),
                lambda: cold(port, tmp, args.quick, out),
                lambda: discovery(processes, args.quick, out),
                lambda: daemon(port, tmp, processes, args.quick, out),
                lambda: growth(port, tmp, args.quick, out),
            ]
            for step in steps:
                step()
        finally:
            processes.stop_all()
    out["quick"] = args.quick
    out["seconds"] = round(time.monotonic() - started, 1)
    out["python"] = platform.python_version()
    out["cpus"] = os.cpu_count()
    out["load_average"] = os.getloadavg()[0]
    sys.stdout.write(render(out))
    print(f"({out['seconds']} s, load average {out['load_average']:.2f}, quick={args.quick})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
