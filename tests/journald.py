"""A stand-in journald for tests: a bound AF_UNIX datagram socket in a tmp dir
that receives records exactly as journald would, and a parser of the native
protocol written from its document (not the agent's own encoder)."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

F_GET_SEALS = 1024 + 10  # linux/fcntl.h
F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x2, 0x4, 0x8

Fields = List[Tuple[str, bytes]]


def parse_native(data: bytes) -> Fields:
    """Given a native-protocol payload, return its (name, value) pairs in order.

    `NAME=value\\n`, or `NAME\\n` + little-endian 64-bit length + value + `\\n`.
    """
    fields: Fields = []
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n", "binary field not closed by \\n"
            at = end + 10 + size
        fields.append((name.decode("ascii"), value))
    return fields


def as_dict(fields: Fields) -> Dict[str, str]:
    """Given parsed fields, return them by name, each name once."""
    names = [name for name, _ in fields]
    assert len(names) == len(set(names)), f"a field appears twice: {names}"
    return {name: value.decode("utf-8") for name, value in fields}


@dataclass
class Received:
    payload: bytes  # the entry, whether it came in the datagram or in a memfd
    via_memfd: bool
    seals: int

    @property
    def fields(self) -> Dict[str, str]:
        return as_dict(parse_native(self.payload))


class FakeJournald:
    """A bound AF_UNIX datagram socket at `path` that reads records like journald."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(5)

    def receive(self) -> Received:
        data, ancdata, _, _ = self.sock.recvmsg(4 * 1024 * 1024, socket.CMSG_SPACE(4))
        fds = [
            fd
            for level, kind, cdata in ancdata
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for (fd,) in struct.iter_unpack("i", cdata[: len(cdata) - len(cdata) % 4])
        ]
        if not fds:
            return Received(data, via_memfd=False, seals=0)
        # The protocol allows a payload or one fd, never both.
        assert data == b"" and len(fds) == 1
        try:
            return Received(_read_all(fds[0]), True, fcntl.fcntl(fds[0], F_GET_SEALS))
        finally:
            os.close(fds[0])

    def pending(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def drain(self) -> int:
        count = 0
        while self.pending():
            self.receive()
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def _read_all(fd: int) -> bytes:
    # journald reads from offset 0 (the sender's writes moved the shared offset).
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        assert chunk
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
