"""Cold discovery cost per 1,000 processes, side by side with a plain scan.

    python benchmarks/discover_scan.py [--extra 1000] [--rounds 30]

Starts `--extra` sleeping processes (so the figure is about a busy node, not
an idle container), then interleaves, `--rounds` times: the floor (list
/proc, read every process's `comm` and `cmdline`, as a shell one-liner would)
and `ProcessFinder().find_all()` with a fresh finder (auto discovery of every
apiserver shape, cold). Prints the medians per 1,000 processes and their
ratio. Every process it starts is killed and reaped before it exits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from typing import List

from agent.observe.discover import ProcessFinder


def plain_scan() -> int:
    """List /proc and read comm and cmdline of every process; return how many."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        count += 1
        try:
            with open(f"/proc/{entry}/comm", "rb") as handle:
                handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                handle.read()
        except OSError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    children: List[subprocess.Popen[bytes]] = []
    try:
        for _ in range(args.extra):
            children.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL))
        time.sleep(0.5)
        floor: List[float] = []
        ours: List[float] = []
        count = 0
        for _ in range(args.rounds):
            start = time.perf_counter()
            count = plain_scan()
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            ProcessFinder().find_all()
            ours.append(time.perf_counter() - start)
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
    per = 1e6 / count  # seconds per scan → ms per 1,000 processes
    a, b = statistics.median(floor) * per, statistics.median(ours) * per
    print(f"processes {count}")
    print(f"discover_floor_ms_per_1000_procs {a:.1f}")
    print(f"discover_ms_per_1000_procs {b:.1f}")
    print(f"ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
