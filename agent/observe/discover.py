"""Find the apiserver process on this node and read its serving flags from /proc.

An apiserver is found by name: `/proc/PID/comm` or the basename of argv[0]
(comm is cut to 15 characters by the kernel, argv[0] is not). Several
processes of one name (aggregated apiservers, a restart in progress, a test
cluster next to the real one) are told apart by `--secure-port` only; with a
single match the port is not checked, because some apiservers take their port
from a config file or another flag (openshift-apiserver, k3s) and their
cmdline says nothing about it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

from agent.model import DEFAULT_SECURE_PORT, ApiserverProcess

_PORT_FLAG = "secure-port"
_BIND_FLAG = "bind-address"


def parse_flags(argv: Sequence[str]) -> Tuple[Optional[int], Optional[str]]:
    """Given a command line, return its (--secure-port, --bind-address) values.

    Either is None when the flag is absent or its value is one kube-apiserver
    would refuse (a port outside 1..65535, an address that is not an IP).
    """
    values = _flag_values(argv)
    port = values.get(_PORT_FLAG)
    address = values.get(_BIND_FLAG)
    return (
        None if port is None else _parse_port(port),
        None if address is None else _parse_address(address),
    )


def _flag_values(argv: Sequence[str]) -> Dict[str, str]:
    """Given a command line, return the last value of each flag we read, as pflag would."""
    values: Dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg == "--":
            # pflag stops parsing flags at "--"; what follows is positional.
            break
        # pflag (kube-apiserver's flag library) takes long flags with two
        # dashes only; "-secure-port" would be read as shorthand letters.
        if not arg.startswith("--"):
            continue
        name, equals, value = arg[2:].partition("=")
        # component-base normalises "_" to "-" in flag names (WordSepNormalizeFunc).
        name = name.replace("_", "-")
        if name not in (_PORT_FLAG, _BIND_FLAG):
            continue
        if not equals:
            # "--flag value": pflag takes the next word whatever it looks like.
            value = next(args, "")
        values[name] = value
    return values


def _parse_port(text: str) -> Optional[int]:
    """Given a --secure-port value, return the port, or None when it is not 1..65535."""
    number = _parse_go_int(text)
    # kube-apiserver refuses 0 ("cannot be switched off"); other apiservers
    # serve no HTTPS with 0, so there is nothing to probe either way.
    if number is None or not 1 <= number <= 65535:
        return None
    return number


def _parse_go_int(text: str) -> Optional[int]:
    """Given a flag value, return the integer Go's strconv.ParseInt(text, 0, 64) reads, or None."""
    # pflag parses int flags with base 0, so "0x1A0B" and the C-style octal
    # "014453" are valid ports there; reading them as decimal would probe the
    # wrong port. Python's int(text, 0) covers the rest of Go's syntax except
    # that octal form, and it accepts spaces and non-ASCII digits that Go does not.
    if not text.isascii() or text != text.strip():
        return None
    sign = text[:1] if text[:1] in ("+", "-") else ""
    body = text[len(sign) :]
    if len(body) > 1 and body[0] == "0" and body[1] in "01234567_":
        body = "0o" + body[1:]
    try:
        return int(sign + body, 0)
    except ValueError:
        return None


def _parse_address(text: str) -> Optional[str]:
    """Given a --bind-address value, return the IP in canonical form, or None."""
    # pflag trims spaces before net.ParseIP; a blank value means "all interfaces".
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class Discovery:
    """The process found for one target, or a sentence saying why there is none."""

    process: Optional[ApiserverProcess]
    error: Optional[str]


class ProcessFinder:
    """Finds apiserver processes, reusing the last one found while it still runs."""

    def __init__(self) -> None:
        # The process found last time per (process_name, port), so that the
        # steady state costs one /proc/PID read instead of a scan of all PIDs.
        self._last: Dict[Tuple[str, Optional[int]], ApiserverProcess] = {}

    def find(self, process_name: str, port: Optional[int]) -> Discovery:
        """Given a process name and the target's port (None: any), return the Discovery."""
        key = (process_name, port)
        last = self._last.get(key)
        if last is not None:
            again = _recheck(last, process_name)
            if again is not None:
                return Discovery(again, None)
        discovery = _scan(process_name, port)
        if discovery.process is None:
            self._last.pop(key, None)
        else:
            self._last[key] = discovery.process
        return discovery


def _recheck(last: ApiserverProcess, process_name: str) -> Optional[ApiserverProcess]:
    """Given the process found last time, return it afresh if that same process still runs."""
    try:
        proc = psutil.Process(last.pid)
    except psutil.Error:
        return None
    current = _inspect(proc, process_name)
    # Same PID with another start time is a restart or a reused PID.
    if current is None or current.started_at != last.started_at:
        return None
    return current


def _scan(process_name: str, port: Optional[int]) -> Discovery:
    """Given a process name and a port (None: any), return the Discovery from all processes."""
    found: List[ApiserverProcess] = []
    try:
        # Only the two cheap fields the name test needs; candidates are read
        # again in full by _inspect, and no Process object is kept.
        for proc in psutil.process_iter(attrs=["name", "cmdline"]):
            if _is_named(process_name, proc.info.get("name"), proc.info.get("cmdline")):
                candidate = _inspect(proc, process_name)
                if candidate is not None:
                    found.append(candidate)
    except psutil.Error as exc:
        # Old psutil re-raises AccessDenied from inside process_iter in rare
        # cases, which ends the iteration; report it instead of crashing.
        return Discovery(None, f"cannot list processes: {exc}")

    if not found:
        return Discovery(None, f"no process named {process_name} found")
    if len(found) == 1:
        return Discovery(found[0], None)
    count = f"{len(found)} processes named {process_name}"
    if port is None:
        return Discovery(
            None, f"{count} (PIDs {_pids(found)}) and no port given to choose one by --secure-port"
        )
    serving = [p for p in found if p.secure_port == port]
    if len(serving) == 1:
        return Discovery(serving[0], None)
    if not serving:
        return Discovery(
            None, f"{count} (PIDs {_pids(found)}) and none listens on port {port} by --secure-port"
        )
    return Discovery(
        None,
        f"{len(serving)} processes named {process_name} serve port {port} (PIDs {_pids(serving)})",
    )


def _inspect(proc: psutil.Process, process_name: str) -> Optional[ApiserverProcess]:
    """Given a process, return it as an ApiserverProcess if it is a live one of that name."""
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            comm = proc.name()
            argv = proc.cmdline()
            created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # Gone (or a zombie) since it was listed, or not ours to read.
        return None
    if not _is_named(process_name, comm, argv):
        return None
    values = _flag_values(argv)
    port_text = values.get(_PORT_FLAG)
    address_text = values.get(_BIND_FLAG)
    return ApiserverProcess(
        pid=proc.pid,
        name=process_name,
        started_at=datetime.fromtimestamp(created, tz=timezone.utc),
        secure_port=DEFAULT_SECURE_PORT if port_text is None else _parse_port(port_text),
        bind_address=None if address_text is None else _parse_address(address_text),
    )


def _is_named(process_name: str, comm: Optional[str], argv: Optional[Sequence[str]]) -> bool:
    """Given a name, a comm and an argv (None when unreadable), return whether they match."""
    if comm == process_name:
        return True
    return argv is not None and len(argv) > 0 and os.path.basename(argv[0]) == process_name


def _pids(processes: Sequence[ApiserverProcess]) -> str:
    """Given processes, return their PIDs as "10, 11"."""
    return ", ".join(str(p.pid) for p in sorted(processes, key=lambda p: p.pid))
