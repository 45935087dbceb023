"""The cheap pass over /proc: which processes are named like an apiserver.

A node runs thousands of processes and a handful of apiservers. This pass
reads `/proc/PID/comm` only (one small read per process) and keeps the PIDs
whose name is wanted; psutil then reads the few that match in full
(`agent.observe.discover`). psutil's own `process_iter` opens several files
per process, which is what made discovery cost three times a plain scan.

comm is cut by the kernel to 15 characters, so a wanted name longer than
that matches on its first 15 characters here and is confirmed later from
argv[0].
"""

from __future__ import annotations

import os
from typing import Iterable, List, Tuple

PROC = "/proc"
COMM_LENGTH = 15


def wanted_comms(names: Iterable[str]) -> Tuple[str, ...]:
    """Given process names, return the comm values that may belong to them."""
    return tuple(sorted({name[:COMM_LENGTH] for name in names if name}))


def matching_pids(comms: Iterable[str], proc: str = PROC) -> Tuple[List[int], int]:
    """Given comm values, return the PIDs whose /proc/PID/comm is one of them,
    and how many processes were looked at.

    Processes that vanish or cannot be read while listed are skipped: a race
    with exit, not an error. Raise OSError when /proc itself cannot be listed.
    """
    wanted = {comm.encode() for comm in comms}
    found: List[int] = []
    seen = 0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        seen += 1
        try:
            # os.open/os.read: no buffered file object per process.
            fd = os.open(f"{proc}/{entry}/comm", os.O_RDONLY)
        except OSError:
            continue
        try:
            comm = os.read(fd, 64).rstrip(b"\n")
        except OSError:
            continue
        finally:
            os.close(fd)
        if comm in wanted:
            found.append(int(entry))
    return found, seen
