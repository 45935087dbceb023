"""A process's network namespace as /proc shows it from the host.

Hosted control planes (Kamaji, HyperShift, vcluster, k0smotron) run
kube-apiserver in a pod, each in its own network namespace. Without `setns`
the host reaches such an apiserver only at an address of its pod. `/proc/PID/net/`
shows that namespace to the host, readable without privileges:
`fib_trie` lists its IPv4 addresses (the `/32 host LOCAL` entries), `if_inet6`
its IPv6 addresses, and `tcp`/`tcp6` its sockets, LISTEN ones included, so we
can tell an apiserver bound to every address from one bound to its own
loopback only (vcluster's child apiserver), which the host cannot reach.

The parsers are pure (text in, values out); `read_netns` is the I/O edge.
"""

from __future__ import annotations

import ipaddress
import os
from typing import List, Optional, Tuple

from agent.record import dataclass

_LISTEN = "0A"
# Bounded reads: a pod with thousands of sockets must not cost megabytes.
_READ_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Netns:
    """What the host sees of one process's network namespace."""

    addresses: Tuple[str, ...]  # the pod's own addresses, loopback excluded, IPv4 first
    listening: Tuple[Tuple[str, int], ...]  # (address, port) of LISTEN sockets


def same_netns(pid: int, proc: str = "/proc") -> Optional[bool]:
    """Given a PID, return whether it shares our network namespace, or None
    when that cannot be read (the process is gone, or ptrace rules forbid it)."""
    try:
        return os.readlink(f"{proc}/{pid}/ns/net") == os.readlink(f"{proc}/self/ns/net")
    except OSError:
        return None


def read_netns(pid: int, proc: str = "/proc") -> Optional[Netns]:
    """Given a PID, return its namespace's addresses and listening sockets,
    or None when /proc/PID/net cannot be read."""
    base = f"{proc}/{pid}/net"
    try:
        fib = _read(f"{base}/fib_trie")
    except OSError:
        return None
    inet6 = _read_or_empty(f"{base}/if_inet6")
    listening = parse_listening(_read_or_empty(f"{base}/tcp"), v6=False)
    listening += parse_listening(_read_or_empty(f"{base}/tcp6"), v6=True)
    return Netns(
        addresses=tuple(parse_fib_trie(fib) + parse_if_inet6(inet6)),
        listening=tuple(listening),
    )


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read(_READ_LIMIT).decode("ascii", "replace")


def _read_or_empty(path: str) -> str:
    try:
        return _read(path)
    except OSError:
        return ""


def parse_fib_trie(text: str) -> List[str]:
    """Given /proc/PID/net/fib_trie, return the namespace's own IPv4
    addresses (the `/32 host LOCAL` leaves), loopback excluded, in order."""
    found: List[str] = []
    last: Optional[str] = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif last is not None and stripped.startswith("/32 host LOCAL"):
            try:
                address = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if not address.is_loopback and str(address) not in found:
                found.append(str(address))
    return found


def parse_if_inet6(text: str) -> List[str]:
    """Given /proc/PID/net/if_inet6, return its global-scope IPv6 addresses."""
    found: List[str] = []
    for line in text.splitlines():
        fields = line.split()
        # address, ifindex, prefix length, scope, flags, device
        if len(fields) < 6 or len(fields[0]) != 32 or fields[3] != "00":
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
        except ValueError:
            continue
        if not address.is_loopback and str(address) not in found:
            found.append(str(address))
    return found


def parse_listening(text: str, v6: bool) -> List[Tuple[str, int]]:
    """Given /proc/PID/net/tcp (or tcp6 with v6), return the (address, port)
    of its LISTEN sockets."""
    found: List[Tuple[str, int]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        address_hex, _, port_hex = fields[1].partition(":")
        try:
            port = int(port_hex, 16)
            address = _kernel_address(address_hex, v6)
        except ValueError:
            continue
        found.append((address, port))
    return found


def _kernel_address(text: str, v6: bool) -> str:
    """Given an address as /proc/net/tcp{,6} prints it (32-bit words in host
    byte order, little-endian on every platform we run on), return it."""
    raw = bytes.fromhex(text)
    if len(raw) != (16 if v6 else 4):
        raise ValueError(text)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if v6:
        return str(ipaddress.IPv6Address(swapped))
    return str(ipaddress.IPv4Address(swapped))


def reachable_address(netns: Netns, port: int) -> Tuple[Optional[str], str]:
    """Given a namespace and the apiserver's port, return the address the host
    can probe it at (None when there is none) and a sentence saying why.

    A socket on a wildcard serves every address, so the pod's own address
    works; a socket on one of the pod's addresses works at that address; a
    socket on loopback only cannot be reached from outside the namespace.
    """
    bound = [address for address, listen_port in netns.listening if listen_port == port]
    if not bound:
        return None, f"no socket listens on port {port} in its network namespace"
    for address in bound:
        if ipaddress.ip_address(address).is_unspecified:
            own = _prefer_family(netns.addresses, ipaddress.ip_address(address).version)
            if own is not None:
                return own, f"listens on all addresses; probed at its pod address {own}"
            return None, "listens on all addresses, but its namespace has no address but loopback"
    for address in bound:
        if address in netns.addresses:
            return address, f"listens on its pod address {address}"
    listed = ", ".join(sorted(set(bound)))
    return None, (
        f"listens only on {listed} inside its own network namespace, which the host "
        "cannot reach without entering it"
    )


def _prefer_family(addresses: Tuple[str, ...], version: int) -> Optional[str]:
    """Given the pod's addresses and a wildcard's IP version, return the
    address to probe: IPv4 first (an IPv6 wildcard serves IPv4 too), else any."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    if version == 4:
        return v4[0] if v4 else None
    return (v4 + v6)[0] if (v4 or v6) else None
