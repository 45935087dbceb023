"""The shapes an apiserver takes on a node, and where each serves its loopback cert.

Pure: given what /proc says about a process (comm, argv, its parent's comm,
the text of a MicroK8s args file), return its Shape: the kind, the stable
target name, and the port and addresses to probe. Sources for each rule are
in README, "Distributions".

- kubeadm (also RKE2, binary installs): comm kube-apiserver, flags in argv;
  --bind-address (loopback when a wildcard) : --secure-port (6443).
- k0s: kube-apiserver whose parent is k0s; as kubeadm.
- openshift: kube-apiserver with --openshift-config; as kubeadm.
- k3s: comm k3s-server, argv without flags; 127.0.0.1:6444, else [::1]:6444.
- microk8s: comm kubelite; its --apiserver-args-file's --bind-address and
  --secure-port (16443).
- aggregated: a name from the configured list; --secure-port, else the
  name's default (openshift-apiserver 8443, others 443).
- pod: any of these in another network namespace; the pod's address
  (`agent.observe.netns`).

k3s's own port (6443 by default) is its supervisor's dynamiclistener, which
before v1.28 adds every SNI it is asked for to its certificate: nothing here
ever points a probe at it.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping, Optional, Sequence, Tuple

from agent.model import DEFAULT_SECURE_PORT
from agent.observe.flags import ServingFlags
from agent.record import dataclass

APISERVER = "kube-apiserver"
K3S = "k3s-server"
KUBELITE = "kubelite"
K0S = "k0s"

# k3s's apiserver port is its https-listen-port + 1 (k3s-io/k3s
# pkg/daemons/control/server.go, defaults()); the listen port is 6443.
K3S_APISERVER_PORT = 6444
# openshift-apiserver's servingInfo.bindAddress default.
OPENSHIFT_APISERVER_PORT = 8443
# k8s.io/apiserver's SecureServingOptions default for servers built on it.
GENERIC_APISERVER_PORT = 443

_AGGREGATED_PORTS: Mapping[str, int] = {"openshift-apiserver": OPENSHIFT_APISERVER_PORT}

KINDS = ("kubeadm", "k3s", "microk8s", "k0s", "openshift", "aggregated", "pod")
# What a target of a given kind looks for, and probes, when the config and
# the process say nothing else. MicroK8s's args file sets 16443
# (canonical/microk8s microk8s-resources/default-args/kube-apiserver).
KIND_PROCESS: Mapping[str, str] = {"k3s": K3S, "microk8s": KUBELITE}
KIND_PORT: Mapping[str, int] = {"k3s": K3S_APISERVER_PORT, "microk8s": 16443}
KIND_HOSTS: Mapping[str, Tuple[str, ...]] = {"k3s": ("127.0.0.1", "::1")}


@dataclass(frozen=True)
class Shape:
    """One apiserver's shape: what it is and where to probe it."""

    kind: str
    name: str  # the stable target name on the host
    port: Optional[int]  # None: not known from the process
    hosts: Tuple[str, ...]  # addresses to try, in order
    bind_address: Optional[str]


def process_names(aggregated: Sequence[str]) -> Tuple[str, ...]:
    """Given the aggregated apiservers' names, return every process name that
    may be an apiserver."""
    return (APISERVER, K3S, KUBELITE, *aggregated)


def recognise(
    comm: str,
    argv0: str,
    flags: ServingFlags,
    parent_comm: Optional[str],
    args_file: Optional[ServingFlags],
    aggregated: Sequence[str],
) -> Optional[Shape]:
    """Given a process's comm, the basename of its argv[0], its flags, its
    parent's comm, the flags of its MicroK8s args file (None when it has
    none or it cannot be read) and the aggregated names, return its Shape,
    or None when it is no apiserver we know."""
    names = {comm, argv0}
    if K3S in names:
        # argv is rewritten to "k3s server": flags say nothing. Loopback only.
        return Shape("k3s", "k3s", K3S_APISERVER_PORT, ("127.0.0.1", "::1"), "127.0.0.1")
    if KUBELITE in names:
        served = args_file if args_file is not None else flags
        port = served.port if served.port_given else DEFAULT_SECURE_PORT
        return Shape(
            "microk8s", "microk8s", port, probe_hosts(served.bind_address), served.bind_address
        )
    if APISERVER in names:
        if flags.openshift:
            kind = "openshift"
        elif parent_comm == K0S:
            kind = "k0s"
        else:
            kind = "kubeadm"
        port = flags.port if flags.port_given else DEFAULT_SECURE_PORT
        return Shape(kind, APISERVER, port, probe_hosts(flags.bind_address), flags.bind_address)
    for name in aggregated:
        if name in names or (len(name) > 15 and comm == name[:15] and argv0 == name):
            port = (
                flags.port
                if flags.port_given
                else _AGGREGATED_PORTS.get(name, GENERIC_APISERVER_PORT)
            )
            return Shape(
                "aggregated", name, port, probe_hosts(flags.bind_address), flags.bind_address
            )
    return None


def probe_hosts(bind_address: Optional[str]) -> Tuple[str, ...]:
    """Given a --bind-address (None: absent), return the addresses to probe, in order.

    A wildcard means every address, so loopback works: 127.0.0.1 for
    0.0.0.0 or none, and for `::` ::1 first, then 127.0.0.1, as upstream's
    loopback client does (an IPv6-only host has no 127.0.0.1). A specific
    address is the only one that works.
    """
    if bind_address is None:
        return ("127.0.0.1",)
    address = ipaddress.ip_address(bind_address)
    if address.is_unspecified:
        return ("::1", "127.0.0.1") if address.version == 6 else ("127.0.0.1",)
    return (bind_address,)
