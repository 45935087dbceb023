"""Find apiserver processes on this node and where each serves its loopback cert.

Two questions, one scan: `ProcessFinder.find(name, port)` finds the process
of one configured target; `ProcessFinder.find_all()` finds every apiserver on
the node, of every shape `agent.observe.shapes` knows, for auto discovery.

The scan reads only `/proc/PID/comm` for every process
(`agent.observe.procscan`); psutil reads the few that match in full (argv,
start time, parent). A process in another network namespace (a hosted control
plane's pod) is probed at its pod address, or reported as unreachable when it
listens on its own loopback only (`agent.observe.netns`); it is named after
its pod (`agent.observe.podname`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

from agent.config.types import DEFAULT_AGGREGATED
from agent.model import DEFAULT_SECURE_PORT, ApiserverProcess, same_process
from agent.observe import netns, procscan
from agent.observe.flags import ServingFlags, args_file_words, read_flags
from agent.observe.shapes import Shape, process_names, recognise
from agent.record import dataclass, replace

# An args file is a few KiB; a bound keeps a hostile one from costing more.
_ARGS_FILE_LIMIT = 256 * 1024
_SNAP_DATA_DEFAULT = "/var/snap/microk8s/current"


@dataclass(frozen=True)
class Discovery:
    """The process found for one target, or a sentence saying why there is
    none; `rejected` when a process was found and refused as another
    target's (it listens on another port), which the report notes."""

    process: Optional[ApiserverProcess]
    error: Optional[str]
    rejected: bool = False


class ProcessFinder:
    """Finds apiserver processes, reusing the last one found while it still runs."""

    def __init__(self, proc: str = procscan.PROC) -> None:
        self.proc = proc
        # The process found last time per (process_name, port), so that the
        # steady state costs one /proc/PID read instead of a scan of all PIDs.
        self._last: Dict[Tuple[str, Optional[int]], ApiserverProcess] = {}

    def find(self, process_name: str, port: Optional[int]) -> Discovery:
        """Given a process name and the target's configured port (None: not
        configured), return the Discovery.

        A process whose --secure-port says it serves another port than the
        configured one is never this target's, even when it is the only match.
        """
        key = (process_name, port)
        last = self._last.get(key)
        if last is not None:
            again = self._recheck(last, process_name)
            if again is not None:
                return Discovery(again, None)
        discovery = self._scan_named(process_name, port)
        if discovery.process is None:
            self._last.pop(key, None)
        else:
            self._last[key] = discovery.process
        return discovery

    def find_all(
        self, aggregated: Sequence[str] = DEFAULT_AGGREGATED
    ) -> Tuple[List[ApiserverProcess], Optional[str]]:
        """Given the aggregated apiservers' process names, return every
        apiserver process on the node, each with its shape, stable label and
        probe addresses, ordered by label; and an error sentence when /proc
        cannot be listed."""
        try:
            candidates = self._candidates(process_names(aggregated))
        except OSError as error:
            return [], f"cannot list processes: {error.strerror or error}"
        found = [self._inspect(pid, None, aggregated) for pid in candidates]
        alive = [p for p in found if p is not None]
        if any(p.kind == "pod" for p in alive):
            # Only hosted control planes need pod names (and maybe crictl).
            from agent.observe import podname

            alive = podname.label_pods(alive, self.proc)
        return _unique_labels(alive), None

    # -- internals -----------------------------------------------------------

    def _candidates(self, names: Sequence[str]) -> List[int]:
        pids, _seen = procscan.matching_pids(procscan.wanted_comms(names), self.proc)
        return pids

    def _recheck(self, last: ApiserverProcess, process_name: str) -> Optional[ApiserverProcess]:
        """Given the process found last time, return it afresh if that same process still runs."""
        current = self._inspect(last.pid, process_name)
        if current is None or not same_process(current, last):
            return None
        return current

    def _scan_named(self, process_name: str, port: Optional[int]) -> Discovery:
        try:
            candidates = self._candidates([process_name])
        except OSError as error:
            return Discovery(None, f"cannot list processes: {error.strerror or error}")
        found = [p for p in (self._inspect(pid, process_name) for pid in candidates) if p]
        return _choose(found, process_name, port)

    def _inspect(
        self,
        pid: int,
        process_name: Optional[str],
        aggregated: Sequence[str] = DEFAULT_AGGREGATED,
    ) -> Optional[ApiserverProcess]:
        """Given a PID, the name wanted (None: any apiserver shape) and the
        aggregated names, return it as an ApiserverProcess if it is a live
        one, else None."""
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None
                comm = proc.name()
                argv = proc.cmdline()
                created = proc.create_time()
                ppid = proc.ppid()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            # Gone (or a zombie) since it was listed, or not ours to read.
            return None
        if not argv:
            # A kernel thread, or a process caught inside exec (the kernel
            # renames it before its new argv is readable): nothing to read yet.
            return None
        argv0 = os.path.basename(argv[0])
        if process_name is not None and process_name not in (comm, argv0):
            return None
        flags = read_flags(argv)
        started = datetime.fromtimestamp(created, tz=timezone.utc)
        args_file = self._args_file(pid, flags.args_file)
        parent = _comm(ppid, self.proc)
        shape = recognise(comm, argv0, flags, parent, args_file, aggregated)
        if shape is None:
            if process_name is None:
                return None
            # Found by its configured name only: its flags, no shape.
            port = flags.port if flags.port_given else DEFAULT_SECURE_PORT
            shape = Shape("", process_name, port, (), flags.bind_address)
        process = ApiserverProcess(
            pid=pid,
            # comm is cut to 15 characters; argv[0] is not.
            name=process_name or (argv0 if len(comm) >= 15 and argv0.startswith(comm) else comm),
            started_at=started,
            secure_port=shape.port,
            bind_address=shape.bind_address,
            kind=shape.kind,
            hosts=shape.hosts,
            label=shape.name,
        )
        return self._place(process)

    def _args_file(self, pid: int, path: Optional[str]) -> Optional[ServingFlags]:
        """Given a PID and its --apiserver-args-file (None: none), return the
        flags in that file, or None when there is none or it cannot be read."""
        if path is None:
            return None
        snap_data = _environ(pid, "SNAP_DATA", self.proc) or _SNAP_DATA_DEFAULT
        path = path.replace("${SNAP_DATA}", snap_data).replace("$SNAP_DATA", snap_data)
        try:
            with open(path, "rb") as handle:
                text = handle.read(_ARGS_FILE_LIMIT).decode("utf-8", "replace")
        except OSError:
            return None
        return read_flags(["kube-apiserver", *args_file_words(text)])

    def _place(self, process: ApiserverProcess) -> ApiserverProcess:
        """Given a process, return it with the addresses the host can reach it
        at when it runs in another network namespace (a pod)."""
        if netns.same_netns(process.pid, self.proc) is not False:
            return process
        seen = netns.read_netns(process.pid, self.proc)
        port = process.secure_port or DEFAULT_SECURE_PORT
        if seen is None:
            reason = "runs in another network namespace that cannot be read"
            return replace(process, kind="pod", hosts=(), unreachable=reason)
        address, why = netns.reachable_address(seen, port)
        hosts = (address,) if address is not None else ()
        first = seen.addresses[0] if seen.addresses else None
        return replace(
            process,
            kind="pod",
            hosts=hosts,
            bind_address=address or first,
            unreachable=None if address is not None else why,
        )


def _choose(found: List[ApiserverProcess], process_name: str, port: Optional[int]) -> Discovery:
    """Given the live processes of one name and the target's configured port
    (None: any), return the one that is the target's, or why there is none."""
    if not found:
        return Discovery(None, f"no process named {process_name} found")
    count = f"{len(found)} processes named {process_name}"
    if port is None:
        if len(found) == 1:
            return Discovery(found[0], None)
        serving = [p for p in found if p.secure_port == DEFAULT_SECURE_PORT]
        if len(serving) == 1:
            return Discovery(serving[0], None)
        return Discovery(
            None, f"{count} (PIDs {_pids(found)}) and no port given to choose one by --secure-port"
        )
    # A process whose port is not known from its flags may be the one.
    serving = [p for p in found if p.secure_port in (port, None)]
    if len(serving) == 1:
        return Discovery(serving[0], None)
    if not serving:
        ports = ", ".join(f"PID {p.pid} on {p.secure_port}" for p in _sorted(found))
        if len(found) == 1:
            return Discovery(
                None,
                f"the only process named {process_name} ({ports}) listens on another "
                f"--secure-port than this target's port {port}: not this target's",
                rejected=True,
            )
        return Discovery(
            None, f"{count} (PIDs {_pids(found)}) and none listens on port {port} by --secure-port"
        )
    return Discovery(
        None,
        f"{len(serving)} processes named {process_name} serve port {port} (PIDs {_pids(serving)})",
    )


def _unique_labels(found: List[ApiserverProcess]) -> List[ApiserverProcess]:
    """Given processes with labels, make every label unique (the port, then
    the PID is added to the later ones) and return them ordered by label."""
    ordered = sorted(found, key=lambda p: (p.label, p.secure_port or 0, p.pid))
    taken: Dict[str, int] = {}
    result: List[ApiserverProcess] = []
    for process in ordered:
        label = process.label
        if label in taken:
            label = f"{process.label}:{process.secure_port}"
            if label in taken:
                label = f"{label}#{process.pid}"
        taken[label] = process.pid
        result.append(replace(process, label=label))
    return result


def _comm(pid: int, proc: str) -> Optional[str]:
    """Given a PID, return its comm, or None when it cannot be read."""
    try:
        with open(f"{proc}/{pid}/comm", "rb") as handle:
            return handle.read(64).decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None


def _environ(pid: int, key: str, proc: str) -> Optional[str]:
    """Given a PID and a variable name, return its value in the process's
    environment, or None when absent or unreadable."""
    try:
        with open(f"{proc}/{pid}/environ", "rb") as handle:
            data = handle.read(_ARGS_FILE_LIMIT)
    except OSError:
        return None
    prefix = key.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def _sorted(processes: Sequence[ApiserverProcess]) -> List[ApiserverProcess]:
    return sorted(processes, key=lambda p: p.pid)


def _pids(processes: Sequence[ApiserverProcess]) -> str:
    """Given processes, return their PIDs as "10, 11"."""
    return ", ".join(str(p.pid) for p in _sorted(processes))
