"""How to restart an apiserver: its systemd unit, its static pod's container, or a command.

Each method is one bounded action returning a MethodResult with a line for the
journal. Whether to restart is decided elsewhere (agent.decide), and whether
the restart worked is checked elsewhere (agent.verify). Every command here
(systemctl, crictl, the restart command) runs through agent.runner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import psutil

from agent.model import ApiserverProcess, same_process
from agent.report.output import rfc3339
from agent.restart.runner import run_command, run_hook

__all__ = [
    "MethodResult",
    "kubelet_problem",
    "restart_command",
    "restart_signal",
    "restart_static_pod",
    "restart_systemd",
    "shape_method",
]

# crictl inspect prints the whole OCI runtime spec; it must be read whole.
_INSPECT_LIMIT = 4 * 1024 * 1024
# kubelet's default terminationGracePeriodSeconds: what a kubelet-initiated
# stop of the apiserver container would allow.
_STOP_GRACE = 30
# Static pods of kubeadm and RKE2 run in kube-system; the labels are kubelet's.
_POD_NAMESPACE = "kube-system"
_KUBELET = "kubelet"


@dataclass(frozen=True)
class MethodResult:
    """How a restart method went: ok, and one line for the journal."""

    ok: bool
    detail: str


def restart_systemd(unit: str, timeout: float, systemctl: str = "systemctl") -> MethodResult:
    """Given a unit name, a timeout in seconds and the systemctl to run, run
    `systemctl restart UNIT`; return how it went.

    systemctl waits for the restart job, so for a Type=notify apiserver exit 0
    means systemd saw it start and report ready. On timeout systemctl is
    killed; the job it queued carries on inside systemd. A unit name that is
    empty or starts with "-" (it would be read as an option) is refused.
    """
    if not unit or unit.startswith("-"):
        return MethodResult(False, f"invalid unit name {unit!r}")
    # --no-ask-password: with no terminal, fail at once instead of waiting on polkit.
    argv = [systemctl, "--no-ask-password", "restart", unit]
    ran = run_command(argv, {}, timeout, f"systemctl restart {unit}")
    return MethodResult(ran.ok, ran.detail)


def restart_command(
    argv: Sequence[str], env_extra: Mapping[str, str], timeout: float
) -> MethodResult:
    """Given the restart command's argv, its extra environment (the caller
    passes KLG_TARGET, KLG_PID, KLG_NOT_AFTER) and a timeout in seconds, run it
    as run_hook does; return how it went. Exit 0 is success. An empty argv is
    a failure: nothing would restart."""
    if not argv:
        return MethodResult(False, "no restart command configured")
    ran = run_hook(argv, env_extra, timeout)
    return MethodResult(ran.ok, ran.detail)


def restart_static_pod(
    process: ApiserverProcess,
    timeout: float,
    crictl: Optional[str] = None,
    runtime_endpoint: Optional[str] = None,
    container_name: Optional[str] = None,
) -> MethodResult:
    """Given the running apiserver, a timeout in seconds, and optionally the
    crictl to use, the CRI endpoint and the container's name (default: the
    process name), make kubelet start a new apiserver; return how it went.

    With crictl (given, or found on PATH): among the running containers of
    that name, find the one whose main PID is the process or an ancestor of it
    (or the only one, when crictl does not tell its PID) and `crictl stop` it
    gracefully (SIGTERM, SIGKILL after up to 30 s); kubelet starts a new one.
    All crictl runs together take at most `timeout`. Without crictl: send
    SIGTERM to the process. Either way the PID is first checked to still be
    the same process (start time and name): a reused PID is never signalled.
    """
    tool = crictl or shutil.which("crictl")
    if tool is None:
        return _terminate(process)
    return _stop_container(process, tool, runtime_endpoint, container_name or process.name, timeout)


def kubelet_problem() -> Optional[str]:
    """Return None when a kubelet process runs on this node, else why a
    static-pod restart must not start: nobody would start the apiserver again."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info.get("cmdline") or []
        if proc.info.get("name") == _KUBELET or (argv and os.path.basename(argv[0]) == _KUBELET):
            return None
    return "kubelet is not running: a stopped apiserver would not be started again"


# method "auto": each shape's own way (README, "Distributions"). k3s and
# MicroK8s embed the apiserver in one service; k0s's supervisor respawns a
# SIGTERMed kube-apiserver; kubelet starts a static pod's container again.
_SHAPE_METHODS: Mapping[str, Tuple[str, str]] = {
    "k3s": ("systemd", "k3s"),
    "microk8s": ("systemd", "snap.microk8s.daemon-kubelite"),
    "k0s": ("signal", ""),
    "kubeadm": ("static-pod", ""),
    "openshift": ("static-pod", ""),
    "aggregated": ("static-pod", ""),
}
NOT_RESTARTABLE = "not-restartable"


def shape_method(method: str, unit: str, kind: str) -> Tuple[str, str]:
    """Given the configured method and unit and the target's kind, return the
    method and unit to use.

    An apiserver in another network namespace (kind "pod", a hosted control
    plane) is never restarted from the node, whatever the method: its
    management cluster rolls it out. Method "auto" takes the shape's way; a
    process found by name only (kind "") falls back to the configured unit.
    """
    if kind == "pod":
        return NOT_RESTARTABLE, ""
    if method != "auto":
        return method, unit
    return _SHAPE_METHODS.get(kind, ("systemd", unit))


def restart_signal(process: ApiserverProcess) -> MethodResult:
    """Given the running apiserver, send it SIGTERM if its PID is still that
    process (start time and name); for supervisors that respawn it, as k0s
    does. Return how it went."""
    return _terminate(process)


def _terminate(process: ApiserverProcess) -> MethodResult:
    """Given the apiserver process, send it SIGTERM if its PID still is that process."""
    pid = process.pid
    # A pidfd pins the process: if the PID is reused after the check below,
    # the signal goes nowhere instead of to the newcomer.
    pidfd = _open_pidfd(pid)
    try:
        problem = _identity_problem(process)
        if problem is not None:
            return MethodResult(False, f"{problem}; not signalled")
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return MethodResult(False, f"PID {pid} exited before the signal; not signalled")
    except PermissionError:
        return MethodResult(False, f"not permitted to signal PID {pid}")
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return MethodResult(True, f"sent SIGTERM to PID {pid}")


def _open_pidfd(pid: int) -> Optional[int]:
    """Given a PID, return a pidfd for it, or None where pidfds are unavailable
    (Linux before 5.3, seccomp) or the process is gone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _identity_problem(process: ApiserverProcess) -> Optional[str]:
    """Given the process found earlier, return why its PID is not that process
    any more, or None when it still is."""
    pid = process.pid
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return f"PID {pid} has already exited"
            started = datetime.fromtimestamp(proc.create_time(), tz=timezone.utc)
            comm = proc.name()
            argv = proc.cmdline()
    except psutil.NoSuchProcess:
        return f"PID {pid} is gone"
    except psutil.AccessDenied:
        return f"not permitted to read PID {pid}"
    if not same_process(replace(process, started_at=started), process):
        return (
            f"PID {pid} is another process now (started {rfc3339(started)}, "
            f"not {rfc3339(process.started_at)})"
        )
    if comm != process.name and not (argv and os.path.basename(argv[0]) == process.name):
        return f"PID {pid} is {comm!r} now, not {process.name!r}"
    return None


def _ancestry(pid: int) -> List[int]:
    """Given a PID, return it followed by its ancestors' PIDs, nearest first."""
    try:
        return [pid] + [parent.pid for parent in psutil.Process(pid).parents()]
    except psutil.Error:
        return [pid]


@dataclass(frozen=True)
class _Container:
    id: str
    pid: Optional[int]


def _stop_container(
    process: ApiserverProcess,
    crictl: str,
    runtime_endpoint: Optional[str],
    name: str,
    timeout: float,
) -> MethodResult:
    """Given the process, crictl, the CRI endpoint, the container name and a
    timeout, stop the container that runs the process; return how it went."""
    problem = _identity_problem(process)
    if problem is not None:
        return MethodResult(False, f"{problem}; no container stopped")
    deadline = time.monotonic() + timeout
    base = [crictl] + (["--runtime-endpoint", runtime_endpoint] if runtime_endpoint else [])

    # crictl warns on stderr (no endpoint configured, deprecated flags):
    # only stdout is parsed.
    # By kubelet's labels: --name is an unanchored regular expression and
    # would also list kube-apiserver-proxy, or an apiserver in a tenant's pod.
    labels = [
        "--label",
        f"io.kubernetes.container.name={name}",
        "--label",
        f"io.kubernetes.pod.namespace={_POD_NAMESPACE}",
    ]
    listed = run_command(
        [*base, "ps", *labels, "-q"],
        {},
        _left(deadline),
        f"crictl ps (container {name} in {_POD_NAMESPACE})",
        separate_stderr=True,
    )
    if not listed.ok:
        return MethodResult(False, listed.detail)
    containers: List[_Container] = []
    for container_id in listed.output.split():
        inspected = run_command(
            [*base, "inspect", "-o", "json", container_id],
            {},
            _left(deadline),
            f"crictl inspect {_short(container_id)}",
            keep=_INSPECT_LIMIT,
            separate_stderr=True,
        )
        if not inspected.ok:
            return MethodResult(False, inspected.detail)
        try:
            container = _running_container(container_id, name, inspected.output)
        except ValueError as error:
            return MethodResult(False, f"crictl inspect {_short(container_id)}: {error}")
        if container is not None:
            containers.append(container)

    chosen, how = _choose(containers, _ancestry(process.pid), process.pid, name)
    if chosen is None:
        return MethodResult(False, f"{how}; no container stopped")
    grace = max(1, min(_STOP_GRACE, int(_left(deadline) / 2)))
    stopped = run_command(
        [*base, "stop", "--timeout", str(grace), chosen.id],
        {},
        _left(deadline),
        f"crictl stop {_short(chosen.id)}",
        separate_stderr=True,
    )
    return MethodResult(stopped.ok, f"{stopped.detail} ({how})")


def _running_container(container_id: str, name: str, text: str) -> Optional[_Container]:
    """Given an ID, the wanted name and `crictl inspect -o json` output, return
    the container if it is running under exactly that name. Raise ValueError
    if the output is not a JSON object."""
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("output is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("output is not a JSON object")
    status = document.get("status")
    info = document.get("info")
    status = status if isinstance(status, dict) else {}
    info = info if isinstance(info, dict) else {}
    metadata = status.get("metadata")
    # crictl --name is an unanchored regular expression: check the exact name.
    if not isinstance(metadata, dict) or metadata.get("name") != name:
        return None
    if status.get("state") != "CONTAINER_RUNNING":
        return None
    pid = info.get("pid")
    valid = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
    return _Container(container_id, pid if valid else None)


def _choose(
    containers: Sequence[_Container], ancestry: Sequence[int], pid: int, name: str
) -> Tuple[Optional[_Container], str]:
    """Given the running containers of the name, the process's PID and its
    ancestors (nearest first), return the container running it and how it was
    matched, or None and why none was."""
    by_pid: Dict[int, _Container] = {c.pid: c for c in containers if c.pid is not None}
    for depth, ancestor in enumerate(ancestry):
        if ancestor in by_pid:
            return by_pid[ancestor], (
                f"container PID {pid}"
                if depth == 0
                else f"container PID {ancestor}, an ancestor of {pid}"
            )
    unknown = [c for c in containers if c.pid is None]
    if len(containers) == 1 and unknown:
        return unknown[0], "the only running container of that name; crictl gave no PID"
    if not containers:
        return None, f"no running container named {name}"
    pids = ", ".join("?" if c.pid is None else str(c.pid) for c in containers)
    return None, f"no running container named {name} runs PID {pid} (container PIDs {pids})"


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _short(container_id: str) -> str:
    # crictl ps shows 13 characters of the 64-character ID.
    return container_id if len(container_id) <= 13 else container_id[:13] + "…"
