"""Structured records for journald over its native protocol, else lines on stderr.

journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL) is one
AF_UNIX datagram per record on /run/systemd/journal/socket, each field either
`NAME=value\\n` or, when the value holds a newline, `NAME\\n` + its length as
64-bit little-endian + the raw bytes + `\\n`. A record too big for one datagram
travels as a sealed memfd passed with SCM_RIGHTS on an empty datagram.
Speaking it ourselves keeps every field searchable (`journalctl
MESSAGE_ID=… TARGET=…`) without python-systemd.

Logging never takes the agent down: when journald is unreachable a record goes
to stderr instead, with one complaint line per outage, and a stderr that fails
too is ignored. Only a programming error (a bad field name or priority) raises.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import stat
import struct
import sys
import threading
from types import MappingProxyType
from typing import List, Mapping, Optional, TextIO, Tuple

from agent.text import one_line

__all__ = [
    "JOURNAL_SOCKET",
    "JOURNAL_SOCKET_ENV",
    "MAX_VALUE_BYTES",
    "SYSLOG_IDENTIFIER",
    "TRUNCATED_FIELD",
    "Journal",
    "open_journal",
    "started_by_systemd",
]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Points every journal this process opens elsewhere (tests, debugging): the
# test suite sets it to a socket in a tmp dir, so it never writes to the host's.
JOURNAL_SOCKET_ENV = "KLG_JOURNAL_SOCKET"
SYSLOG_IDENTIFIER = "kube-loopback-guard"

# Every value is cut to this. The agent's records are one-liners; a value this
# big is a bug (a runaway error text), and it must not fill the journal.
MAX_VALUE_BYTES = 1024 * 1024
# Without memfd a record must fit one datagram (the socket's send buffer,
# 208 KiB by default): each value is cut to this, so some fifteen fields fit.
DATAGRAM_VALUE_BYTES = 8 * 1024
# Set to 1 on a record whose values were cut; each cut value ends in the mark.
TRUNCATED_FIELD = "KLG_TRUNCATED"
_TRUNCATION_MARK = " … [truncated]".encode()

# journald's rule for names a client may send: no leading "_" (journald's own
# trusted fields) and no leading digit.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_OWN_FIELDS = frozenset({"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", TRUNCATED_FIELD})
_PRIORITY_NAMES = ("EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")
_PRIORITY_WARNING = 4

# Seal values from linux/fcntl.h, for Pythons built without them. journald
# accepts an unsealed memfd only from root, so we always seal.
_F_ADD_SEALS: int = getattr(fcntl, "F_ADD_SEALS", 1024 + 9)
_SEALS: int = (
    getattr(fcntl, "F_SEAL_SEAL", 0x1)
    | getattr(fcntl, "F_SEAL_SHRINK", 0x2)
    | getattr(fcntl, "F_SEAL_GROW", 0x4)
    | getattr(fcntl, "F_SEAL_WRITE", 0x8)
)
_MFD_FLAGS: int = getattr(os, "MFD_CLOEXEC", 0x1) | getattr(os, "MFD_ALLOW_SEALING", 0x2)

# What sendmsg says when a datagram is bigger than the send buffer allows.
_TOO_BIG = frozenset({errno.EMSGSIZE, errno.ENOBUFS})


_NO_FIELDS: Mapping[str, object] = MappingProxyType({})

_Field = Tuple[str, bytes]


class Journal:
    """Where the agent's records go: journald's native socket when
    `socket_path` is set, else `stream` (stderr), one line per record.

    `stream_is_journal` says stderr is itself connected to journald
    (JOURNAL_STREAM): lines then start with `<N>` so journald keeps the
    priority. `echo` writes every record to the stream too, for a process
    started by hand, whose operator reads the terminal, not the journal.
    Safe to share between threads.
    """

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        socket_path: Optional[str] = None,
        *,
        stream_is_journal: bool = False,
        echo: bool = False,
    ) -> None:
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.socket_path = socket_path
        self.stream_is_journal = stream_is_journal
        self.echo = echo
        self._sock: Optional[socket.socket] = None
        self._failing = False
        self._lock = threading.Lock()

    def send(self, message: str, priority: int, fields: Mapping[str, object] = _NO_FIELDS) -> None:
        """Given a message, a syslog priority (0-7) and extra fields (None
        values left out), record them; return once sent or written to stderr.

        Raises ValueError for a priority or field name journald would refuse,
        and never for a journal that cannot be reached.
        """
        record = _record(message, priority, fields)
        if self.socket_path is None:
            self._write(_line(record, priority, self.stream_is_journal))
            return
        with self._lock:
            error = self._send_native(self.socket_path, record)
            complain = error is not None and not self._failing
            self._failing = error is not None
        if error is None:
            if self.echo:
                self._write(_line(record, priority, self.stream_is_journal))
            return
        if complain:
            self._write(self._complaint(self.socket_path, error))
        self._write(_line(record, priority, self.stream_is_journal))

    def close(self) -> None:
        """Given nothing, close the socket (a later send opens a new one); return None."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send_native(self, path: str, record: List[_Field]) -> Optional[OSError]:
        """Given the socket path and a record, send it as one datagram, else
        through a memfd, else cut to fit a datagram; return the error that
        stopped it, or None once sent."""
        payload = _encode(record)
        try:
            sock = self._socket()
            sock.sendto(payload, path)
            return None
        except OSError as error:
            if error.errno not in _TOO_BIG:
                return error
        memfd = _sealed_memfd(payload)
        try:
            if memfd is not None:
                rights = struct.pack("i", memfd)
                sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, path)
            else:
                sock.sendto(_encode(_cut(record, DATAGRAM_VALUE_BYTES)), path)
        except OSError as error:
            return error
        finally:
            if memfd is not None:
                os.close(memfd)
        return None

    def _socket(self) -> socket.socket:
        """Given nothing, return the socket to journald, made on first use."""
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # A stuck journald must not stall the agent: with a full queue,
            # sendto fails (EAGAIN) and the record goes to stderr instead.
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def _complaint(self, path: str, error: OSError) -> str:
        prefix = f"<{_PRIORITY_WARNING}>" if self.stream_is_journal else "WARNING "
        return (
            f"{prefix}{SYSLOG_IDENTIFIER}: cannot send to the journal at {path}:"
            f" {error.strerror or error}; records go to stderr until it works again\n"
        )

    def _write(self, line: str) -> None:
        # Nowhere is left to report a failing stderr to; losing a line beats
        # crashing the agent that guards the apiserver.
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass


def open_journal(
    stream: Optional[TextIO] = None,
    socket_path: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Journal:
    """Given stderr, journald's socket path (default: $KLG_JOURNAL_SOCKET, else
    JOURNAL_SOCKET) and the environment, return the Journal to use: native
    when that socket exists, else lines on stderr (`<N>`-prefixed when
    JOURNAL_STREAM says stderr goes to journald). Records are echoed to stderr
    too when systemd did not start us (see started_by_systemd)."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if socket_path is None:
        socket_path = environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
    on_journal = _is_journal_stream(stream, environ.get("JOURNAL_STREAM", ""))
    try:
        native = stat.S_ISSOCK(os.stat(socket_path).st_mode)
    except OSError:
        native = False
    return Journal(
        stream,
        socket_path if native else None,
        stream_is_journal=on_journal,
        echo=not started_by_systemd(stream, environ),
    )


def started_by_systemd(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Given stderr and the environment, return whether systemd runs us as a
    service whose output it collects: stderr is its journal stream, or
    INVOCATION_ID is set and stderr is not a terminal (`systemd-run -t` and a
    shell inside a unit's environment read the terminal)."""
    if _is_journal_stream(stream, environ.get("JOURNAL_STREAM", "")):
        return True
    try:
        terminal = stream.isatty()
    except (OSError, ValueError):
        terminal = False
    return bool(environ.get("INVOCATION_ID")) and not terminal


def _is_journal_stream(stream: TextIO, journal_stream: str) -> bool:
    """Given a stream and $JOURNAL_STREAM ("device:inode", set by systemd),
    return whether the stream is that journald connection."""
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def _record(message: str, priority: int, fields: Mapping[str, object]) -> List[_Field]:
    """Given send()'s arguments, return the record's fields as encoded values,
    each cut to MAX_VALUE_BYTES; raise ValueError for a bad priority or name."""
    if not isinstance(priority, int) or not 0 <= priority <= 7:
        raise ValueError(f"journal priority must be 0..7, not {priority!r}")
    record = [
        # One line: a MESSAGE carries text from peers (certificate subjects, errors).
        ("MESSAGE", _utf8(one_line(message, limit=None))),
        ("PRIORITY", str(priority).encode()),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.encode()),
    ]
    for name, value in fields.items():
        if not isinstance(name, str) or _FIELD_NAME.fullmatch(name) is None:
            raise ValueError(
                f"not a journal field name: {name!r} (A-Z, 0-9 and _, starting"
                " with a letter, at most 64 characters)"
            )
        if name in _OWN_FIELDS:
            raise ValueError(f"journal field {name} is set by Journal.send itself")
        if value is not None:
            record.append((name, _utf8(str(value))))
    return _cut(record, MAX_VALUE_BYTES)


def _utf8(text: str) -> bytes:
    # backslashreplace: a lone surrogate (an undecodable file name) must not
    # make logging raise.
    return text.encode("utf-8", "backslashreplace")


def _cut(record: List[_Field], limit: int) -> List[_Field]:
    """Given a record and a size, return it with every longer value cut to
    that size, ending in the truncation mark, plus KLG_TRUNCATED=1 when any was."""
    if all(len(value) <= limit for _, value in record):
        return record
    cut: List[_Field] = []
    for name, value in record:
        if len(value) > limit:
            # Cut bytes may end inside a UTF-8 sequence; decoding with
            # "ignore" drops only that partial character.
            head = value[: limit - len(_TRUNCATION_MARK)].decode("utf-8", "ignore")
            value = head.encode() + _TRUNCATION_MARK
        if name != TRUNCATED_FIELD:
            cut.append((name, value))
    cut.append((TRUNCATED_FIELD, b"1"))
    return cut


def _encode(record: List[_Field]) -> bytes:
    """Given a record, return it in journald's native format."""
    parts: List[bytes] = []
    for name, value in record:
        if b"\n" in value:
            parts += [name.encode(), b"\n", struct.pack("<Q", len(value)), value, b"\n"]
        else:
            parts += [name.encode(), b"=", value, b"\n"]
    return b"".join(parts)


def _sealed_memfd(payload: bytes) -> Optional[int]:
    """Given a payload, return a sealed memfd holding it, or None when this
    kernel or Python cannot make one (no memfd_create, no sealing)."""
    try:
        memfd = os.memfd_create("journal-" + SYSLOG_IDENTIFIER, _MFD_FLAGS)
    except (AttributeError, OSError):
        return None
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(memfd, view) :]
        fcntl.fcntl(memfd, _F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(memfd)
        return None
    return memfd


def _line(record: List[_Field], priority: int, on_journal: bool) -> str:
    """Given a record, return it as one stderr line: the priority (`<N>` for
    journald, else its name), the message, then NAME=value for each field."""
    prefix = f"<{priority}>" if on_journal else _PRIORITY_NAMES[priority] + " "
    # Control characters made visible, so one record stays one line on stderr.
    words = [prefix + one_line(_text(record[0][1]), None)]
    for name, value in record[3:]:
        words.append(f"{name}={_quoted(_text(value))}")
    return " ".join(words) + "\n"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _quoted(value: str) -> str:
    """Given a field value, return it readable in `NAME=value` form: quoted
    when it is empty or holds a space, quote, backslash or "=" """
    if value and not any(c in value for c in ' "\\='):
        return one_line(value, None)
    return '"' + one_line(value.replace("\\", "\\\\").replace('"', '\\"'), None) + '"'
