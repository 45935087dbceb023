"""Reading apiserver flags the way kube-apiserver's flag library (pflag) does.

One parser for every place flags come from: a process's argv and MicroK8s's
args files (one flag per line, `#` comments, values possibly quoted).
"""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Sequence

from agent.record import dataclass

PORT_FLAG = "secure-port"
BIND_FLAG = "bind-address"
ARGS_FILE_FLAG = "apiserver-args-file"  # MicroK8s kubelite
OPENSHIFT_FLAG = "openshift-config"  # OpenShift's kube-apiserver
_READ = (PORT_FLAG, BIND_FLAG, ARGS_FILE_FLAG, OPENSHIFT_FLAG)


@dataclass(frozen=True)
class ServingFlags:
    """The flags discovery reads. `port` and `bind_address` are None when the
    flag is absent or its value is one kube-apiserver would refuse (a port
    outside 1..65535, an address that is not an IP); `port_given` says whether
    --secure-port was written at all."""

    port: Optional[int]
    port_given: bool
    bind_address: Optional[str]
    args_file: Optional[str]
    openshift: bool


def read_flags(argv: Sequence[str]) -> ServingFlags:
    """Given a command line (or an args file's words), return its ServingFlags."""
    values = flag_values(argv)
    port = values.get(PORT_FLAG)
    address = values.get(BIND_FLAG)
    return ServingFlags(
        port=None if port is None else parse_port(port),
        port_given=port is not None,
        bind_address=None if address is None else parse_address(address),
        args_file=values.get(ARGS_FILE_FLAG) or None,
        openshift=OPENSHIFT_FLAG in values,
    )


def args_file_words(text: str) -> List[str]:
    """Given a MicroK8s args file, return its flags as argv words: one flag
    per line, blank lines and `#` comments skipped, shell quoting removed."""
    import shlex  # only MicroK8s nodes have args files

    words: List[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words.extend(shlex.split(line))
        except ValueError:
            words.append(line)
    return words


def flag_values(argv: Sequence[str]) -> Dict[str, str]:
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
        if name not in _READ:
            continue
        if not equals and name != OPENSHIFT_FLAG:
            # "--flag value": pflag takes the next word whatever it looks like.
            value = next(args, "")
        values[name] = value
    return values


def parse_port(text: str) -> Optional[int]:
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


def parse_address(text: str) -> Optional[str]:
    """Given a --bind-address value, return the IP in canonical form, or None."""
    # pflag trims spaces before net.ParseIP; a blank value means "all interfaces".
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None
