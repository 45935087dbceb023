"""The restarter's I/O edges, as one injected object.

`Restarter` decides the order of things; everything it does to the world goes
through a `RestartEdges`: the probe, finding the process, /readyz (local and
the peers'), hooks, the restart methods, the kubelet check and the Lease.
Tests replace single edges; the defaults are the real ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence, Tuple

from agent.check import ProbeFunction
from agent.config.types import RestartConfig, RestartMethod
from agent.kube.api import KubeApiClient, KubeApiError
from agent.kube.kubeconfig import KubeconfigError, load_kubeconfig
from agent.kube.lease import Lease
from agent.model import ApiserverProcess
from agent.observe.discover import ProcessFinder
from agent.restart.lease_holder import open_lease
from agent.restart.methods import (
    NOT_RESTARTABLE,
    MethodResult,
    kubelet_problem,
    restart_command,
    restart_signal,
    restart_static_pod,
    restart_systemd,
    shape_method,
)
from agent.restart.runner import HookResult, run_hook
from agent.restart.verify import ReadyzResult, peer_address, readyz, readyz_url

__all__ = ["RestartEdges", "effective_method", "find_serving", "peer_readyz", "run_method"]


def find_serving(process_name: str, port: int) -> Optional[ApiserverProcess]:
    """Given a process name and a port, return the process of that name
    serving that port, from a fresh scan (a finder's cache, or another
    apiserver of the same name, must never pass for "the new process")."""
    found = ProcessFinder().find(process_name, port).process
    return found if found is not None and found.secure_port == port else None


def local_readyz(host: str, port: int, timeout: float) -> ReadyzResult:
    """Given the local apiserver's address, return its /readyz answer; 401/403
    (anonymous access off) counts as serving, its readiness not visible."""
    result = readyz(host, port, timeout)
    if result.status in (401, 403):
        return ReadyzResult(True, result.status, f"{result.detail} (serving)")
    return result


def peer_readyz(url: str, timeout: float, ca_file: str, kubeconfig: str) -> ReadyzResult:
    """Given a peer URL, a timeout, a CA file ("" = do not verify) and a
    kubeconfig ("" = none), return whether the peer is ready.

    With a kubeconfig its CA and credentials ask /readyz, which must answer
    200. Without, the public /readyz must say ok, and 401/403 (anonymous access
    off, normal with CIS hardening) counts as serving, readiness not visible:
    the detail says so.
    """
    if kubeconfig:
        try:
            credentials = load_kubeconfig(kubeconfig)
            host, port = peer_address(url)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            client = KubeApiClient(
                replace(credentials, server=f"https://{authority}"), timeout=timeout
            )
            status, _ = client.request("GET", "/readyz")
        except (KubeconfigError, KubeApiError, ValueError) as error:
            return ReadyzResult(False, None, f"/readyz not asked: {error}")
        if status == 200:
            return ReadyzResult(True, 200, "/readyz ok (with credentials)")
        return ReadyzResult(
            False, status, f"/readyz not ok: {status} (with credentials of {kubeconfig})"
        )
    result = readyz_url(url, timeout, ca_file or None)
    if result.status in (401, 403):
        return ReadyzResult(
            True, result.status, f"/readyz answered {result.status}: serving, readiness not visible"
        )
    return result


def effective_method(policy: RestartConfig, kind: str) -> Tuple[str, str]:
    """Given the restart policy and the target's kind, return the method and
    unit this target is restarted by (method "auto" takes the shape's way)."""
    return shape_method(policy.method.value, policy.unit, kind)


def run_method(
    policy: RestartConfig,
    process: Optional[ApiserverProcess],
    env: Mapping[str, str],
    kind: str = "",
) -> MethodResult:
    """Given the restart policy, the apiserver process, the hook environment
    and the target's kind, restart it by its method."""
    timeout = policy.command_timeout.total_seconds()
    method, unit = effective_method(policy, kind)
    if method == NOT_RESTARTABLE:
        return MethodResult(
            False,
            f"{NOT_RESTARTABLE}: the apiserver runs in a pod's own network namespace "
            "(a hosted control plane); its management cluster restarts it",
        )
    if method == RestartMethod.SYSTEMD:
        return restart_systemd(unit, timeout)
    if method in (RestartMethod.STATIC_POD, RestartMethod.SIGNAL):
        if process is None:
            return MethodResult(False, f"{method} restart needs the apiserver process")
        if method == RestartMethod.SIGNAL:
            return restart_signal(process)
        return restart_static_pod(
            process, timeout, runtime_endpoint=policy.runtime_endpoint or None
        )
    return restart_command(policy.command, env, timeout)


@dataclass(frozen=True)
class RestartEdges:
    """Everything the restarter does to the world, one callable each."""

    probe: ProbeFunction
    find_process: Callable[[str, int], Optional[ApiserverProcess]] = find_serving
    readyz: Callable[[str, int, float], ReadyzResult] = local_readyz
    peer_readyz: Callable[[str, float, str, str], ReadyzResult] = peer_readyz
    hook: Callable[[Sequence[str], Mapping[str, str], float], HookResult] = run_hook
    method: Callable[
        [RestartConfig, Optional[ApiserverProcess], Mapping[str, str], str], MethodResult
    ] = run_method
    kubelet_problem: Callable[[], Optional[str]] = kubelet_problem
    open_lease: Callable[[RestartConfig, str, Callable[[], float]], Optional[Lease]] = open_lease
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
