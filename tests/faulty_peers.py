"""Small real servers on 127.0.0.1 that misbehave the ways networks do.

Each peer is a context manager: entering starts its accept thread, leaving stops
every thread it started and closes every socket it opened.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Callable, List, Optional, Type, TypeVar

from agent.standin.certs import make_loopback_pair, server_context

DRIP_INTERVAL = 0.3

_Peer = TypeVar("_Peer", bound="FaultyPeer")


def closed_port(host: str = "127.0.0.1") -> int:
    """Return a port on host that nothing listens on (bound once, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Return True as soon as condition() holds, False if it still fails after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout turns close() into a TCP RST.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultyPeer:
    """A TCP server on 127.0.0.1:<random> whose handle() misbehaves."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []
        self.accepted = 0

    def __enter__(self: _Peer) -> _Peer:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    # The plain socket call, so it also works under an SSLSocket.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "faulty peer thread did not stop"
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def pause(self, seconds: float) -> bool:
        """Sleep; return False when the peer is being closed."""
        return not self._stop.wait(seconds)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.settimeout(0.2)
            self.track(conn)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.handle(conn)

    def recv_some(self, conn: socket.socket) -> bytes:
        """Return the first bytes the client sends ("" if it sends none before close)."""
        while not self._stop.is_set():
            try:
                return conn.recv(65536)
            except socket.timeout:
                continue
        return b""


class SilentPeer(FaultyPeer):
    """Accepts and never says a word."""

    def handle(self, conn: socket.socket) -> None:
        while self.pause(0.05):
            pass


class PlainHttpPeer(FaultyPeer):
    """Speaks plain HTTP: answers anything with 400 Bad Request, then closes."""

    def handle(self, conn: socket.socket) -> None:
        if self.recv_some(conn):
            conn.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request"
            )
        conn.close()


class ResetPeer(FaultyPeer):
    """Reads the client's first bytes, then resets the connection."""

    def handle(self, conn: socket.socket) -> None:
        self.recv_some(conn)
        _reset(conn)


class DripPeer(FaultyPeer):
    """Trickles a TLS record, one byte every DRIP_INTERVAL seconds, forever.

    The record header announces 16 KiB of handshake data, a legal length, so
    the client keeps waiting for the rest instead of failing at once.
    """

    def handle(self, conn: socket.socket) -> None:
        self.recv_some(conn)
        trickle = b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000
        for byte in trickle:
            conn.sendall(bytes([byte]))
            if not self.pause(DRIP_INTERVAL):
                return


class TlsPeer(FaultyPeer):
    """Completes a TLS handshake with a loopback certificate, then misbehaves."""

    def __init__(self, *, lifetime: timedelta = timedelta(days=365)) -> None:
        super().__init__()
        self.pair = make_loopback_pair(
            datetime.now(timezone.utc) - timedelta(days=30), lifetime, key_type="ec"
        )
        self._context = server_context(self.pair)

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        tls = self._context.wrap_socket(conn, server_side=True)
        self.track(tls)
        tls.settimeout(0.2)
        try:
            self.after_handshake(tls)
        finally:
            tls.close()

    def read_request(self, tls: ssl.SSLSocket) -> bytes:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.recv_some(tls)
            if not chunk:
                break
            request += chunk
        return request

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        raise NotImplementedError


class TlsDripResponsePeer(TlsPeer):
    """Reads the HTTP request, then trickles a response one byte at a time."""

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        self.read_request(tls)
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + b" " * 1000
        for byte in response:
            tls.sendall(bytes([byte]))
            if not self.pause(DRIP_INTERVAL):
                return


class TlsResetPeer(TlsPeer):
    """Reads the HTTP request, then resets the connection."""

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        self.read_request(tls)
        _reset(tls)


class TlsScriptedPeer(TlsPeer):
    """Reads the HTTP request, then sends a fixed response and closes."""

    def __init__(self, response: bytes, **kwargs: timedelta) -> None:
        super().__init__(**kwargs)
        self.response = response
        self.requests: List[bytes] = []

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        self.requests.append(self.read_request(tls))
        tls.sendall(self.response)


class TlsEndlessChunkedPeer(TlsPeer):
    """Reads the HTTP request, then answers 200 with a chunked body that never
    ends, as fast as the client reads it; `sent` counts the body bytes sent."""

    def __init__(self, chunk: bytes = b"[+]ping ok\n" * 372) -> None:
        super().__init__()
        self.chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        self.sent = 0

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        self.read_request(tls)
        tls.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while not self._stop.is_set():
            try:
                tls.sendall(self.chunk)
            except socket.timeout:
                continue  # the client is not reading: wait for it, or for close
            self.sent += len(self.chunk)
