"""TLS connections that end by one deadline, whatever the peer does.

`connect` resolves a host, connects and completes the TLS handshake, and the
connection it returns sends and receives, all against one `Deadline`. The
socket is non-blocking and the TLS bytes are pumped by hand through memory
BIOs: Python's blocking TLS socket bounds each call by its timeout, not their
sum, so a peer trickling one byte a second could stretch it. Every failure is
a `NetError` worded for an operator and naming the phase ("connect", "TLS
handshake", "request", "response").

The context, from `agent.net.trust`, says whom to trust.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple, TypeVar

__all__ = [
    "Deadline",
    "NetError",
    "NetTimeout",
    "TlsConnection",
    "UntrustedPeer",
    "connect",
    "seconds",
    "ssl_reason",
]

_RECV_SIZE = 16 * 1024
_T = TypeVar("_T")
_Address = Tuple[int, int, int, Tuple[Any, ...]]


class Deadline:
    """The moment on the monotonic clock by which an exchange must end, and
    the timeout it was set from (for messages)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def remaining(self) -> float:
        """Return the seconds left; raise _Expired once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise _Expired()
        return left


class NetError(Exception):
    """A connection or exchange that failed, worded for an operator; `phase`
    is where ("connect", "TLS handshake", "request", "response")."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class NetTimeout(NetError):
    """The deadline passed."""


class UntrustedPeer(NetError):
    """The server's certificate did not verify; `verify_message` is OpenSSL's reason."""

    def __init__(self, verify_message: str) -> None:
        super().__init__(f"certificate not trusted: {verify_message}", "TLS handshake")
        self.verify_message = verify_message


class _Expired(Exception):
    pass


class _PeerClosed(Exception):
    pass


# -- connecting ----------------------------------------------------------------


def connect(
    host: str,
    port: int,
    *,
    server_name: Optional[str],
    context: ssl.SSLContext,
    deadline: Deadline,
) -> TlsConnection:
    """Given a host (name, IP, or [IPv6]), a port, the TLS server name (None:
    the host; an IP sends no SNI), a context and a deadline, return a
    connection whose handshake is complete, trying each address of the host
    in turn. Raise NetError (NetTimeout past the deadline, UntrustedPeer when
    verification fails) saying what went wrong and in which phase."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    sni = name if server_name is None else server_name
    with _phase("connect", deadline):
        sock = _open(name, port, deadline)
    try:
        try:
            connection = TlsConnection(sock, context, sni, deadline)
        except (ValueError, TypeError) as exc:
            # An unusable server name (empty, NUL, not IDNA-encodable).
            raise NetError(f"cannot use server name {sni!r}: {exc}", "connect") from None
        connection.handshake()
        return connection
    except BaseException:
        sock.close()
        raise


def _open(host: str, port: int, deadline: Deadline) -> socket.socket:
    last: Optional[OSError] = None
    for family, socktype, proto, sockaddr in _resolve(host, port, deadline):
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR):
                _wait(sock, write=True, deadline=deadline)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code not in (0, errno.EISCONN):
                raise OSError(code, os.strerror(code))
            return sock
        except OSError as exc:
            # The next address gets what is left of the deadline.
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    assert last is not None
    raise last


def _resolve(host: str, port: int, deadline: Deadline) -> List[_Address]:
    try:
        # IP literals, the usual target, never touch the resolver.
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        found = _resolve_by(host, port, deadline)
    except ValueError as exc:
        # Not IDNA-encodable, or a NUL in the name.
        raise NetError(f"cannot resolve {host!r}: {exc}", "connect") from None
    addresses: List[_Address] = [
        (family, socktype, proto, sockaddr)
        for family, socktype, proto, _name, sockaddr in found
        if family in (socket.AF_INET, socket.AF_INET6)
    ]
    if not addresses:
        raise NetError(f"cannot resolve {host!r}: no IPv4 or IPv6 address", "connect")
    return addresses


def _resolve_by(host: str, port: int, deadline: Deadline) -> List[Any]:
    # getaddrinfo takes no timeout: ask in a thread and stop waiting at the
    # deadline (the thread ends when the resolver gives up).
    answers: queue.Queue[Any] = queue.Queue(maxsize=1)

    def ask() -> None:
        try:
            answers.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, ValueError) as exc:
            answers.put(exc)

    threading.Thread(target=ask, name="klg-resolve", daemon=True).start()
    try:
        found = answers.get(timeout=deadline.remaining())
    except queue.Empty:
        raise _Expired() from None
    if isinstance(found, socket.gaierror):
        raise NetError(f"cannot resolve {host!r}: {found.strerror}", "connect")
    if isinstance(found, Exception):
        raise NetError(f"cannot resolve {host!r}: {found}", "connect")
    return list(found)


def _wait(sock: socket.socket, *, write: bool, deadline: Deadline) -> None:
    # poll, unlike select, copes with descriptors above 1024 in a long-lived daemon.
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(deadline.remaining() * 1000):
        raise _Expired()


# -- the connection ------------------------------------------------------------


class TlsConnection:
    """A client TLS session over a non-blocking socket, bounded by a deadline.
    Use it as a context manager, or call close()."""

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, server_name: str, deadline: Deadline
    ) -> None:
        self.deadline = deadline
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_name
        )
        self._first_bytes = b""

    def __enter__(self) -> TlsConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def handshake(self) -> None:
        """Complete the handshake. Raise NetError if it fails."""
        with _phase("TLS handshake", self.deadline):
            try:
                self._run(self._tls.do_handshake)
            except (_PeerClosed, ssl.SSLError) as exc:
                if self._first_bytes.startswith(b"HTTP/"):
                    raise NetError(
                        "TLS handshake failed: the peer answered in plain HTTP", "TLS handshake"
                    ) from None
                raise exc

    def peer_certificate(self) -> Optional[bytes]:
        """Return the server's leaf certificate as DER (None if it sent none)."""
        return self._tls.getpeercert(binary_form=True)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Within it, turn socket and TLS failures into NetError naming the phase."""
        with _phase(name, self.deadline):
            yield

    def send(self, data: bytes) -> None:
        """Send all of data, within the deadline (inside a phase())."""
        self._run(lambda: self._tls.write(data))

    def recv(self, size: int = _RECV_SIZE) -> bytes:
        """Return the next decrypted bytes (at most size), or b"" once the peer
        has closed; within the deadline (inside a phase())."""
        try:
            return self._run(lambda: self._tls.read(size))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, _PeerClosed):
            return b""

    def _run(self, operation: Callable[[], _T]) -> _T:
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            except (ssl.SSLEOFError, ssl.SSLSyscallError):
                if self._incoming.eof:
                    raise _PeerClosed() from None
                raise
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        while data:
            _wait(self._sock, write=True, deadline=self.deadline)
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                continue
            data = data[sent:]

    def _fill(self) -> None:
        if self._incoming.eof:
            # OpenSSL still wants bytes after the peer closed: it never will.
            raise _PeerClosed()
        _wait(self._sock, write=False, deadline=self.deadline)
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            if len(self._first_bytes) < 8:
                self._first_bytes += data[: 8 - len(self._first_bytes)]
            self._incoming.write(data)
        else:
            self._incoming.write_eof()


# -- wording -------------------------------------------------------------------


@contextlib.contextmanager
def _phase(name: str, deadline: Deadline) -> Iterator[None]:
    try:
        yield
    except NetError:
        raise
    except _Expired:
        raise NetTimeout(
            f"timed out after {seconds(deadline.timeout)} during {name}", name
        ) from None
    except _PeerClosed:
        raise NetError(f"connection closed by peer during {name}", name) from None
    except ssl.SSLCertVerificationError as exc:
        raise UntrustedPeer(str(exc.verify_message or ssl_reason(exc))) from None
    except ssl.SSLError as exc:
        if name == "TLS handshake":
            raise NetError(f"TLS handshake failed: {ssl_reason(exc)}", name) from None
        raise NetError(f"TLS failed during {name}: {ssl_reason(exc)}", name) from None
    except OSError as exc:
        raise NetError(_os_error(exc, name), name) from None


def seconds(timeout: float) -> str:
    """Given a timeout in seconds, return it for a message: "1.0s", "0.25s"."""
    text = f"{timeout:.1f}"
    return (text if float(text) == timeout else f"{timeout:g}") + "s"


def ssl_reason(exc: ssl.SSLError) -> str:
    """Given an SSLError, return OpenSSL's reason for a message ("wrong version number")."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc)


def _os_error(exc: OSError, phase: str) -> str:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, ConnectionResetError) or exc.errno == errno.ECONNRESET:
        return f"connection reset by peer during {phase}"
    if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
        return f"connection closed by peer during {phase}"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"{exc.strerror or 'unreachable'} during {phase}".lower()
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"{phase} failed: {detail}"
