"""The configuration as frozen values: what the pure core and the edges read.

Built only by `agent.config.loader`; imported by everything that needs a
threshold, a target or the restart policy without pulling in the loader.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Optional, Tuple

from agent.record import dataclass

# Every dataclass here has a docstring: without one, @dataclass computes a
# signature through `inspect` for its __doc__, about 0.5 ms a class at import.

if TYPE_CHECKING:  # `check` needs no window machinery (zoneinfo) to load a config
    from agent.judge.window import MaintenanceWindow


class RestartMethod(str, Enum):
    """How the apiserver is restarted (`[restart] method`)."""

    SYSTEMD = "systemd"
    STATIC_POD = "static-pod"
    COMMAND = "command"
    SIGNAL = "signal"  # SIGTERM to the verified PID (k0s's supervisor respawns it)
    AUTO = "auto"  # each target kind's own way

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Thresholds:
    """How long before expiry a certificate is a warning, and a critical."""

    warning: timedelta
    critical: timedelta


@dataclass(frozen=True)
class MetricsConfig:
    """Where the node-exporter textfile goes ("" = nowhere)."""

    textfile: str  # "" = off


# Aggregated apiservers (built on k8s.io/apiserver, each with its own
# loopback certificate) that auto discovery recognises by process name.
DEFAULT_AGGREGATED: Tuple[str, ...] = ("openshift-apiserver",)
# The default target's values: with nothing else pinned, kind "auto" means
# every apiserver on the node (agent.check.expand).
DEFAULT_TARGET_NAME = "kube-apiserver"
DEFAULT_PROCESS_NAME = "kube-apiserver"


@dataclass(frozen=True)
class TargetConfig:
    """One apiserver to watch: how to find its process and where to probe it."""

    name: str
    process_name: str
    host: str  # "" = from --bind-address
    port: int  # 0 = from --secure-port
    server_name: str
    timeout: timedelta
    lifetime: Optional[timedelta]  # None = "auto"
    # "auto" or a shape of agent.observe.shapes.KINDS.
    kind: str = "auto"
    aggregated: Tuple[str, ...] = DEFAULT_AGGREGATED

    @property
    def discovers_all(self) -> bool:
        """Whether this target stands for every apiserver on the node: kind
        "auto" with no process name, host or port of its own."""
        return (
            self.kind == "auto"
            and self.process_name == DEFAULT_PROCESS_NAME
            and not self.host
            and not self.port
        )


@dataclass(frozen=True)
class LeaseConfig:
    """The Kubernetes Lease that lets one node of a cluster restart at a time."""

    kubeconfig: str
    namespace: str
    name: str
    duration: timedelta
    identity: str  # "" = host name


@dataclass(frozen=True)
class RestartConfig:
    """Whether, how, when and after which checks an apiserver is restarted."""

    enabled: bool
    dry_run: bool
    method: RestartMethod
    unit: str
    command: Tuple[str, ...]
    targets: Tuple[str, ...]  # empty = every target
    before_expiry: timedelta
    min_interval: timedelta
    when_expired: str  # "immediately" | "window"
    random_delay: timedelta
    ready_timeout: timedelta
    command_timeout: timedelta
    peers: Tuple[str, ...]
    peer_ca: str
    peer_kubeconfig: str  # "" = the lease's kubeconfig, if any
    runtime_endpoint: str  # "" = crictl's default
    blocking_command: Tuple[str, ...]
    pre_hook: Tuple[str, ...]
    post_hook: Tuple[str, ...]
    windows: Tuple[MaintenanceWindow, ...]
    lease: Optional[LeaseConfig]

    def applies_to(self, target: str) -> bool:
        return not self.targets or target in self.targets

    @property
    def peer_credentials(self) -> str:
        """The kubeconfig that asks the peers' /readyz, or "" for none."""
        if self.peer_kubeconfig:
            return self.peer_kubeconfig
        return self.lease.kubeconfig if self.lease is not None else ""


@dataclass(frozen=True)
class Config:
    """The whole configuration, from one file or the built-in defaults."""

    path: Optional[str]  # None when built-in defaults are in force
    interval: timedelta
    state_dir: str
    thresholds: Thresholds
    metrics: MetricsConfig
    targets: Tuple[TargetConfig, ...]
    restart: RestartConfig
