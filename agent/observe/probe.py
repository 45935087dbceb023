"""Ask an apiserver for its loopback certificate, as its own loopback client does.

One probe is one TCP connection: a TLS handshake with SNI
`apiserver-loopback-client`, reading (not verifying) the leaf certificate, then,
on the same connection, `GET /livez/loopback-serving-certificate`. The whole
exchange runs against a single deadline: the socket is non-blocking and the TLS
bytes are pumped by hand through memory BIOs, so a peer that trickles one byte
a second cannot stretch a probe past its timeout.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Optional, TypeVar

import agent
from agent.model import LivezVerdict, LoopbackCert, ProbeResult
from agent.observe.certificate import read_loopback_cert

__all__ = ["probe"]

_log = logging.getLogger(__name__)

LIVEZ_PATH = "/livez/loopback-serving-certificate"

_RECV_SIZE = 16 * 1024
_MAX_RESPONSE_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024

_T = TypeVar("_T")

_context: Optional[ssl.SSLContext] = None
_context_lock = threading.Lock()


class _ProbeError(Exception):
    """A reason the probe ended, worded for an operator."""


class _Timeout(_ProbeError):
    pass


class _PeerClosed(_ProbeError):
    pass


def probe(
    host: str,
    port: int,
    server_name: str,
    timeout: float,
    *,
    check_livez: bool = True,
) -> ProbeResult:
    """Given an address, the SNI to send and a timeout in seconds, return what
    the peer served: its loopback certificate and livez verdict, or the reason
    there is none.

    Connecting, the handshake and the livez request together take at most
    `timeout` (name resolution aside, which is instant for IP literals). Never
    raise for network or peer trouble: the result carries cert=None and a short
    `error` instead. A livez problem leaves the certificate result standing.
    """
    if not 0 < port < 65536:
        return _result(host, port, server_name, None, "not-checked", f"invalid port {port}")
    deadline = time.monotonic() + timeout
    phase = "connect"
    sock: Optional[socket.socket] = None
    try:
        sock = _connect(host, port, deadline)
        phase = "TLS handshake"
        session = _Session(sock, server_name, deadline)
        der = session.handshake()
        try:
            cert = read_loopback_cert(der)
        except ValueError as exc:
            # NotLoopbackCert included: never report another certificate's dates.
            return _result(host, port, server_name, None, "not-checked", str(exc))
        livez: LivezVerdict = "not-checked"
        if check_livez:
            livez = _check_livez(session, server_name)
        return _result(host, port, server_name, cert, livez, None)
    except _Timeout:
        error = f"timed out after {_seconds(timeout)} during {phase}"
    except _ProbeError as exc:
        error = str(exc)
    except ssl.SSLError as exc:
        error = f"TLS handshake failed: {_ssl_reason(exc)}"
    except OSError as exc:
        error = _os_error(exc, phase)
    except ValueError as exc:
        # An unusable host or server name (empty, NUL, not IDNA-encodable).
        error = f"cannot probe {host!r} with server name {server_name!r}: {exc}"
    finally:
        if sock is not None:
            sock.close()
    return _result(host, port, server_name, None, "not-checked", error)


def _result(
    host: str,
    port: int,
    server_name: str,
    cert: Optional[LoopbackCert],
    livez: LivezVerdict,
    error: Optional[str],
) -> ProbeResult:
    return ProbeResult(
        host=host, port=port, server_name=server_name, cert=cert, livez=livez, error=error
    )


def _tls_context() -> ssl.SSLContext:
    # Built once per process: the daemon probes every few minutes for years.
    global _context
    with _context_lock:
        if _context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # We read the certificate to learn its dates; we never trust it.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # The apiserver would pick h2 if offered; we speak HTTP/1.1 only.
            context.set_alpn_protocols(["http/1.1"])
            _context = context
        return _context


# -- connecting --------------------------------------------------------------


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    addresses = _resolve(host, port)
    last: Optional[OSError] = None
    for family, socktype, proto, sockaddr in addresses:
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR):
                _wait(sock, write=True, deadline=deadline)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code not in (0, errno.EISCONN):
                raise OSError(code, errno.errorcode.get(code, str(code)))
            return sock
        except _Timeout:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    if last is None:
        raise _ProbeError(f"cannot resolve {host}: no address")
    raise last


def _resolve(host: str, port: int) -> list[tuple[int, int, int, tuple[Any, ...]]]:
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        # IP literals (the usual target) never touch the resolver.
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        try:
            found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _ProbeError(f"cannot resolve {host}: {exc.strerror}") from exc
    addresses: list[tuple[int, int, int, tuple[Any, ...]]] = [
        (family, socktype, proto, sockaddr)
        for family, socktype, proto, _canonname, sockaddr in found
        if family in (socket.AF_INET, socket.AF_INET6)
    ]
    if not addresses:
        raise _ProbeError(f"cannot resolve {host}: no IPv4 or IPv6 address")
    return addresses


def _wait(sock: socket.socket, *, write: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout()
    # poll, unlike select, copes with descriptors above 1024 in a long-lived daemon.
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    if not poller.poll(remaining * 1000):
        raise _Timeout()


# -- TLS by hand -------------------------------------------------------------


class _Session:
    """A client TLS session over a non-blocking socket, bounded by a deadline."""

    def __init__(self, sock: socket.socket, server_name: str, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = _tls_context().wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_name
        )
        self._first_bytes = b""

    def handshake(self) -> bytes:
        """Complete the handshake and return the peer's leaf certificate as DER."""
        try:
            self._run(self._tls.do_handshake)
        except _PeerClosed:
            raise _ProbeError(self._closed_during_handshake()) from None
        except ssl.SSLError as exc:
            if self._first_bytes.startswith(b"HTTP/"):
                raise _ProbeError("TLS handshake failed: the peer answered in plain HTTP") from exc
            raise
        der = self._tls.getpeercert(binary_form=True)
        if not der:
            raise _ProbeError("the peer sent no certificate")
        return der

    def send(self, data: bytes) -> None:
        self._run(lambda: self._tls.write(data))

    def recv(self) -> bytes:
        """Return the next decrypted bytes, or b"" once the peer has closed."""
        try:
            return self._run(lambda: self._tls.read(_RECV_SIZE))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, _PeerClosed):
            return b""

    def _closed_during_handshake(self) -> str:
        if self._first_bytes.startswith(b"HTTP/"):
            return "TLS handshake failed: the peer answered in plain HTTP"
        return "connection closed by peer during TLS handshake"

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
            _wait(self._sock, write=True, deadline=self._deadline)
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                continue
            data = data[sent:]

    def _fill(self) -> None:
        if self._incoming.eof:
            # OpenSSL still wants bytes after the peer closed: it never will.
            raise _PeerClosed()
        _wait(self._sock, write=False, deadline=self._deadline)
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


# -- livez ---------------------------------------------------------------------


def _check_livez(session: _Session, server_name: str) -> LivezVerdict:
    request = (
        f"GET {LIVEZ_PATH} HTTP/1.1\r\n"
        f"Host: {server_name}\r\n"
        f"User-Agent: kube-loopback-guard/{agent.__version__}\r\n"
        "Accept: text/plain\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii", "replace")
    try:
        session.send(request)
        status, headers, rest = _read_head(session)
        if status == 200:
            body = _read_body(session, headers, rest)
            if body.strip() == b"ok":
                return "ok"
            _log.debug("livez answered 200 with an unexpected body: %r", body[:200])
            return "error"
        verdict = _STATUS_VERDICTS.get(status)
        if verdict is None:
            _log.debug("livez answered HTTP %d", status)
            return "error"
        return verdict
    except _Timeout:
        _log.debug("livez: timed out")
        return "error"
    except (_ProbeError, ValueError, OSError) as exc:
        # ssl.SSLError is an OSError. Whatever went wrong here, the certificate
        # was already read and stands.
        _log.debug("livez: %s", exc)
        return "error"


_STATUS_VERDICTS: dict[int, LivezVerdict] = {
    500: "failed",
    404: "absent",
    401: "forbidden",
    403: "forbidden",
}


def _read_head(session: _Session) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_RESPONSE_HEAD:
            raise ValueError("response head too large")
        chunk = session.recv()
        if not chunk:
            raise ValueError("connection closed before the response head")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def _read_body(session: _Session, headers: dict[str, str], rest: bytes) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(session, rest)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise ValueError(f"bad Content-Length {length_text!r}")
        length = min(int(length_text), _MAX_BODY)
        body = rest
        while len(body) < length:
            chunk = session.recv()
            if not chunk:
                raise ValueError("connection closed inside the response body")
            body += chunk
        return body[:length]
    body = rest
    while len(body) < _MAX_BODY:
        chunk = session.recv()
        if not chunk:
            break
        body += chunk
    return body[:_MAX_BODY]


def _read_chunked(session: _Session, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            if len(data) > _MAX_RESPONSE_HEAD:
                raise ValueError("chunk size line too long")
            data = _more(session, data)
        size_line, data = data.split(b"\r\n", 1)
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0 or len(body) >= _MAX_BODY:
            return body[:_MAX_BODY]
        while len(data) < size + 2:
            data = _more(session, data)
        body += data[:size]
        data = data[size + 2 :]


def _more(session: _Session, data: bytes) -> bytes:
    chunk = session.recv()
    if not chunk:
        raise ValueError("connection closed inside a chunked body")
    return data + chunk


# -- wording -------------------------------------------------------------------


def _seconds(timeout: float) -> str:
    text = f"{timeout:.1f}"
    return (text if float(text) == timeout else f"{timeout:g}") + "s"


def _ssl_reason(exc: ssl.SSLError) -> str:
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
