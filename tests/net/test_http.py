"""Tests for agent.net.http: one request and its bounded response, against
real TLS peers on 127.0.0.1."""

from __future__ import annotations

import time
import tracemalloc
from typing import Optional, Sequence, Tuple

import pytest
from faulty_peers import TlsDripResponsePeer, TlsEndlessChunkedPeer, TlsResetPeer, TlsScriptedPeer

import agent
from agent.net import http, tls, trust

LIMIT = 1000


def _exchange(
    port: int,
    *,
    limit: int = LIMIT,
    timeout: float = 5.0,
    headers: Sequence[Tuple[str, str]] = (),
    body: Optional[bytes] = None,
    target: str = "/livez?verbose",
) -> http.Response:
    with tls.connect(
        "127.0.0.1",
        port,
        server_name=None,
        context=trust.unverified_context(),
        deadline=tls.Deadline(timeout),
    ) as connection:
        return http.exchange(
            connection,
            "POST" if body is not None else "GET",
            target,
            host="apiserver.example:6443",
            accept="text/plain",
            limit=limit,
            headers=headers,
            body=body,
        )


def _scripted(response: bytes, **kwargs: object) -> Tuple[http.Response, TlsScriptedPeer]:
    with TlsScriptedPeer(response) as peer:
        return _exchange(peer.port, **kwargs), peer  # type: ignore[arg-type]


def test_the_request_is_plain_http_1_1() -> None:
    answer, peer = _scripted(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
        headers=[("Authorization", "Bearer abc")],
        body=b'{"a":1}',
    )
    assert answer == http.Response(201, b"{}")
    head, _, _ = peer.requests[0].partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines == [
        "POST /livez?verbose HTTP/1.1",
        "Host: apiserver.example:6443",
        f"User-Agent: kube-loopback-guard/{agent.__version__}",
        "Accept: text/plain",
        "Connection: close",
        "Authorization: Bearer abc",
        "Content-Type: application/json",
        "Content-Length: 7",
    ]


@pytest.mark.parametrize(
    ("response", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok and more", 200, b"ok"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", 200, b"ok"),
        (b"HTTP/1.0 403 Forbidden\r\n\r\n", 403, b""),
        (
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\n[-]\r\nA\r\netcd faile\r\n0\r\nTrailer: x\r\n\r\n",
            500,
            b"[-]etcd faile",
        ),
        # 1-byte chunks decode to the body, however many there are.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"1\r\n%c\r\n" % c for c in b"x" * LIMIT)
            + b"0\r\n\r\n",
            200,
            b"x" * LIMIT,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
)
def test_response_forms(response: bytes, status: int, body: bytes) -> None:
    assert _scripted(response)[0] == http.Response(status, body)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"", "no HTTP response: the peer closed the connection"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP response: 'SSH-2.0-OpenSSH_9.6\\r\\n'"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "not an HTTP response: 'HTTP/1.1 abc OK\\r\\n'"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
            "response body incomplete (2 bytes, 8 more expected)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
            "not a valid HTTP response (IncompleteRead(0 bytes read))",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            "not a valid HTTP response (IncompleteRead(0 bytes read))",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001,
            "response body over 1000 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000, "response body over 1000 bytes"),
        # Head and framing count against the limit too (http.client's own
        # bounds allow 100 header lines of 64 KiB).
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: %s\r\n" % (b"y" * 1000) * 90 + b"\r\n",
            "response over 66536 bytes",
        ),
    ],
)
def test_bad_responses(response: bytes, message: str) -> None:
    with TlsScriptedPeer(response) as peer, pytest.raises(tls.NetError) as raised:
        _exchange(peer.port)
    assert (str(raised.value), raised.value.phase) == (message, "response")


@pytest.mark.parametrize(
    ("headers", "target"),
    [([("X-Injected", "a\r\nWATCHDOG=trigger")], "/"), ((), "/livez\r\nHost: evil"), ((), "/é")],
)
def test_no_line_break_or_non_ascii_reaches_the_wire(
    headers: Sequence[Tuple[str, str]], target: str
) -> None:
    refused = pytest.raises(tls.NetError, match="control or non-ASCII")
    with TlsScriptedPeer(b"HTTP/1.1 200 OK\r\n\r\n") as peer, refused as raised:
        _exchange(peer.port, headers=headers, target=target)
    assert raised.value.phase == "request"


def test_an_endless_chunked_body_ends_at_the_limit_in_bounded_memory() -> None:
    with TlsEndlessChunkedPeer() as peer:
        tracemalloc.start()
        try:
            with pytest.raises(tls.NetError, match="response body over 8192 bytes"):
                _exchange(peer.port, limit=http.HEALTH_LIMIT, timeout=5.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1024 * 1024, f"peak {peak} bytes"


def test_a_json_sized_limit_bounds_an_endless_body_too() -> None:
    too_large = pytest.raises(tls.NetError, match="response body over 1048576 bytes")
    with TlsEndlessChunkedPeer() as peer, too_large:
        _exchange(peer.port, limit=http.JSON_LIMIT, timeout=10.0)


def test_a_dripped_response_ends_at_the_deadline() -> None:
    with TlsDripResponsePeer() as peer:
        started = time.monotonic()
        with pytest.raises(tls.NetTimeout) as raised:
            _exchange(peer.port, timeout=1.0)
        elapsed = time.monotonic() - started
    assert str(raised.value) == "timed out after 1.0s during response"
    assert 0.9 <= elapsed < 1.5


def test_a_reset_after_the_request() -> None:
    with TlsResetPeer() as peer, pytest.raises(tls.NetError) as raised:
        _exchange(peer.port)
    assert raised.value.phase == "response"
