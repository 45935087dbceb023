"""One HTTP/1.1 request and its response over a `TlsConnection`, by its deadline.

`exchange` writes a request (always `Connection: close`: one request per
connection) and reads the status line, the two headers that frame the body
(Content-Length, Transfer-Encoding) and the body, taking its bytes from the
connection under the connection's deadline. Every response is bounded: the
body by the caller's `limit` (a few KiB for health endpoints, `JSON_LIMIT`
for the API), every head or chunk-size line by `_MAX_LINE`, the head by
`_MAX_HEADERS` lines, and the whole response with its head and chunk framing
by the limit plus `_FRAMING`, so an endless or drip-fed body ends at the
limit or the deadline, whichever comes first, holding at most that much.
Reading is linear in the bytes received, chunked bodies included.

The parser is our own rather than `http.client`'s, which would bring the
`email` package into every cold `check` for the two headers read here.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Tuple

import agent
from agent.net.tls import NetError, TlsConnection
from agent.record import dataclass

__all__ = ["HEALTH_LIMIT", "JSON_LIMIT", "Response", "exchange"]

# /livez?verbose lists some 40 checks of ~50 bytes; /readyz a few more.
HEALTH_LIMIT = 8 * 1024
# A Lease or a Kubernetes Status is a few KiB; leave room for managedFields.
JSON_LIMIT = 1024 * 1024
# Status line, headers and chunk-size lines on top of the body.
_FRAMING = 64 * 1024
_RECV_SIZE = 16 * 1024
# As http.client bounds them.
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 100
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")


@dataclass(frozen=True)
class Response:
    """An HTTP response: its status and its whole body (at most the limit)."""

    status: int
    body: bytes


def exchange(
    connection: TlsConnection,
    method: str,
    target: str,
    *,
    host: str,
    accept: str,
    limit: int,
    headers: Sequence[Tuple[str, str]] = (),
    body: Optional[bytes] = None,
    content_type: str = "application/json",
) -> Response:
    """Given a connection, a method, a request target ("/livez?verbose"), the
    Host header, the Accept header, a body limit in bytes, more headers and a
    body (None: none), send the request and return the response, all within
    the connection's deadline. Raise NetError if the request cannot be sent,
    the answer is not HTTP/1.x, is incomplete, its body exceeds `limit`, or
    the deadline passes (NetTimeout)."""
    fields = [("Host", host), ("User-Agent", f"kube-loopback-guard/{agent.__version__}")]
    fields += [("Accept", accept), ("Connection", "close"), *headers]
    if body is not None:
        fields += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    request = _head(method, target, fields) + (body or b"")
    with connection.phase("request"):
        connection.send(request)
    with connection.phase("response"):
        return _read_response(connection, method, limit)


def _head(method: str, target: str, fields: Sequence[Tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields)]
    if not all(_PRINTABLE.fullmatch(line) for line in lines):
        # A line break in a header value would write a header of its own.
        raise NetError("cannot send the request: a control or non-ASCII character in it", "request")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _read_response(connection: TlsConnection, method: str, limit: int) -> Response:
    stream = _Stream(connection, limit + _FRAMING)
    status, headers = _read_head(stream)
    while status == 100:
        # 100 Continue: the real answer follows.
        status, headers = _read_head(stream)
    if method == "HEAD" or status in (204, 304) or status < 200:
        return Response(status, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return Response(status, _read_chunked(stream, limit))
    length = headers.get("content-length")
    if length is None:
        # Delimited by the peer's close.
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        return Response(status, body)
    if not _DIGITS.fullmatch(length.encode("latin-1")):
        raise _invalid(f"Content-Length {length[:40]!r}")
    expected = int(length)
    if expected > limit:
        raise _too_large(limit)
    body = stream.read(expected)
    if len(body) < expected:
        raise NetError(
            f"response body incomplete ({len(body)} bytes, {expected - len(body)} more expected)",
            "response",
        )
    return Response(status, body)


def _read_head(stream: _Stream) -> Tuple[int, Dict[str, str]]:
    """Read a status line and its header lines; return the status and the
    headers by lower-case name (the first of each name)."""
    raw = stream.readline()
    if not raw:
        raise NetError("no HTTP response: the peer closed the connection", "response")
    line = raw.decode("latin-1")
    parts = line.split(None, 2)
    version = parts[0] if parts else ""
    code = parts[1] if len(parts) > 1 else ""
    if not (version in ("HTTP/1.0", "HTTP/0.9") or version.startswith("HTTP/1.")) or not (
        len(code) == 3 and code.isascii() and code.isdigit() and code[0] != "0"
    ):
        raise NetError(f"not an HTTP response: {line[:40]!r}", "response")
    headers: Dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        raw = stream.readline()
        if raw in (b"\r\n", b"\n", b""):
            return int(code), headers
        name, colon, value = raw.decode("latin-1").partition(":")
        if colon and name and name == name.strip():
            # Folded continuation lines, and lines without a colon or with
            # space around the name, frame nothing.
            headers.setdefault(name.lower(), value.strip())
    raise _invalid(f"more than {_MAX_HEADERS} headers")


def _read_chunked(stream: _Stream, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = stream.readline()
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            if not line:
                raise _invalid("chunked body cut short")
            raise _invalid(f"chunk size {line[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _too_large(limit)
        chunk = stream.read(size)
        if len(chunk) < size or stream.readline() not in (b"\r\n", b"\n"):
            raise _invalid("chunked body cut short")
        body += chunk
    # Trailer fields, up to the blank line or the peer's close.
    while stream.readline() not in (b"\r\n", b"\n", b""):
        pass
    return bytes(body)


def _too_large(limit: int) -> NetError:
    return NetError(f"response body over {limit} bytes", "response")


def _invalid(detail: str) -> NetError:
    return NetError(f"not a valid HTTP response ({detail})", "response")


class _Stream:
    """The connection's decrypted bytes, at most `budget` of them, read by
    line or by count. Every byte is scanned once: a line search resumes
    where the last one stopped."""

    def __init__(self, connection: TlsConnection, budget: int) -> None:
        self._connection = connection
        self._budget = budget
        self._left = budget
        self._buffer = bytearray()
        self._scanned = 0
        self._eof = False

    def readline(self) -> bytes:
        """Return the next line with its b"\\n" (without one at the peer's
        close; b"" once nothing is left). Raise NetError past _MAX_LINE."""
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                return self._take(end + 1)
            self._scanned = len(self._buffer)
            if self._scanned > _MAX_LINE:
                raise _invalid(f"a line over {_MAX_LINE} bytes")
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, count: int) -> bytes:
        """Return the next count bytes (fewer at the peer's close)."""
        while len(self._buffer) < count and self._fill():
            pass
        return self._take(min(count, len(self._buffer)))

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._scanned = 0
        return data

    def _fill(self) -> bool:
        if self._eof:
            return False
        if self._left <= 0:
            raise NetError(f"response over {self._budget} bytes", "response")
        data = self._connection.recv(min(self._left, _RECV_SIZE))
        self._left -= len(data)
        self._buffer += data
        self._eof = not data
        return not self._eof
