"""One HTTP/1.1 request and its response over a `TlsConnection`, by its deadline.

`exchange` writes a request (always `Connection: close`: one request per
connection) and reads the status, headers and body with `http.client`'s
parser, fed through a reader that takes its bytes from the connection under
the connection's deadline. Every response is bounded: the body by the
caller's `limit` (a few KiB for health endpoints, `JSON_LIMIT` for the API),
the whole response with its head and chunk framing by that plus
`_FRAMING`, so an endless or drip-fed body ends at the limit or the deadline,
whichever comes first, holding at most that much. http.client decodes chunked
bodies in linear time and bounds every head line.
"""

from __future__ import annotations

import http.client
import io
import re
import socket
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, cast

import agent
from agent.net.tls import NetError, TlsConnection

__all__ = ["HEALTH_LIMIT", "JSON_LIMIT", "Response", "exchange"]

# /livez?verbose lists some 40 checks of ~50 bytes; /readyz a few more.
HEALTH_LIMIT = 8 * 1024
# A Lease or a Kubernetes Status is a few KiB; leave room for managedFields.
JSON_LIMIT = 1024 * 1024
# Status line, headers and chunk-size lines on top of the body.
_FRAMING = 64 * 1024
_RECV_SIZE = 16 * 1024
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


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
    reader = _Reader(connection, limit + _FRAMING)
    response = http.client.HTTPResponse(cast(socket.socket, reader), method=method)
    try:
        response.begin()
        body = response.read(limit + 1)
    except http.client.BadStatusLine as exc:
        # RemoteDisconnected included: it is both a BadStatusLine and an OSError.
        line = str(getattr(exc, "line", ""))
        if isinstance(exc, http.client.RemoteDisconnected) or not line.strip("'"):
            raise NetError("no HTTP response: the peer closed the connection", "response") from None
        raise NetError(f"not an HTTP response: {line[:40]!r}", "response") from None
    except http.client.HTTPException as exc:
        detail = str(exc) or type(exc).__name__
        raise NetError(f"not a valid HTTP response ({detail[:80]})", "response") from None
    if len(body) > limit:
        raise NetError(f"response body over {limit} bytes", "response")
    if response.length:
        # http.client returns a Content-Length body cut short by the peer's
        # close without complaint.
        raise NetError(
            f"response body incomplete ({len(body)} bytes, {response.length} more expected)",
            "response",
        )
    return Response(response.status, body)


class _Reader(io.RawIOBase):
    """The connection's decrypted bytes, at most `budget` of them, in the
    shape http.client reads a socket through (`makefile`)."""

    def __init__(self, connection: TlsConnection, budget: int) -> None:
        super().__init__()
        self._connection = connection
        self._left = budget
        self._budget = budget

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            raise NetError(f"response over {self._budget} bytes", "response")
        data = self._connection.recv(min(len(buffer), self._left, _RECV_SIZE))
        count = len(data)
        buffer[:count] = data
        self._left -= count
        return count
