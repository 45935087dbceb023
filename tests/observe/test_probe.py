"""Tests for agent.probe, against real peers on 127.0.0.1 and ::1.

The faulty-peer tests measure elapsed time: not as a benchmark, but because the
probe's contract is one deadline for the whole exchange, whatever the peer does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, Tuple, Type

import pytest
from cryptography import x509
from faulty_peers import (
    DripPeer,
    FaultyPeer,
    PlainHttpPeer,
    ResetPeer,
    SilentPeer,
    TlsDripResponsePeer,
    TlsEndlessChunkedPeer,
    TlsResetPeer,
    TlsScriptedPeer,
    closed_port,
    wait_until,
)

import agent
from agent.model import LOOPBACK_SERVER_NAME, ProbeResult
from agent.net.http import HEALTH_LIMIT
from agent.observe.probe import livez_verdict, probe
from agent.standin.server import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]
LIVEZ_TARGET = "/livez?verbose"
TIMEOUT = 5.0
# Short enough to keep the suite quick, long enough to dwarf scheduling noise.
DEADLINE = 1.0
SLACK = 0.5


def _probe(host: str, port: int, timeout: float = TIMEOUT, **kwargs: bool) -> ProbeResult:
    return probe(host, port, LOOPBACK_SERVER_NAME, timeout, **kwargs)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- the certificate -----------------------------------------------------------


@pytest.mark.parametrize("days", [365, 1096])
def test_reads_the_loopback_certificate(standin: StandinFactory, days: int) -> None:
    api = standin(lifetime=timedelta(days=days), expires_in=timedelta(days=200))

    result = _probe(api.host, api.port)

    assert result.cert is not None and result.error is None
    assert (result.host, result.port, result.server_name) == (
        api.host,
        api.port,
        LOOPBACK_SERVER_NAME,
    )
    cert = result.cert
    assert cert is not None
    assert cert.lifetime == timedelta(days=days)
    assert cert.not_after == api.pair.not_after
    assert cert.not_before == api.pair.not_before
    assert cert.generated_at == api.pair.generated_at
    assert cert.subject == f"CN=apiserver-loopback-client@{int(api.pair.generated_at.timestamp())}"
    assert cert.sha256 == hashlib.sha256(api.pair.cert_der).hexdigest()
    assert result.livez == "ok"
    assert api.loopback_handshakes == 1


def test_rsa_2048_as_upstream(standin: StandinFactory) -> None:
    api = standin(key_type="rsa")
    result = _probe(api.host, api.port)
    assert result.cert is not None and result.livez == "ok"
    assert result.cert.sha256 == hashlib.sha256(api.pair.cert_der).hexdigest()


def test_near_expiry(standin: StandinFactory) -> None:
    api = standin(expires_in=timedelta(hours=2))
    result = _probe(api.host, api.port)
    assert result.cert is not None
    remaining = result.cert.not_after - _now()
    assert timedelta(hours=2) - timedelta(seconds=5) < remaining <= timedelta(hours=2)
    assert result.livez == "ok"


def test_expired_certificate_is_still_read(standin: StandinFactory) -> None:
    api = standin(expires_in=-timedelta(days=3))
    result = _probe(api.host, api.port)
    assert result.cert is not None
    assert result.cert.not_after < _now() - timedelta(days=2)
    # What a v1.36+ apiserver answers once the certificate has expired.
    assert result.livez == "failed"


def test_not_yet_valid_certificate_is_read(standin: StandinFactory) -> None:
    api = standin(not_yet_valid=True)
    result = _probe(api.host, api.port)
    assert result.cert is not None
    assert result.cert.not_before > _now()


def test_a_server_ignoring_sni_is_not_mistaken_for_the_loopback(standin: StandinFactory) -> None:
    api = standin(ignore_sni=True)
    result = _probe(api.host, api.port)
    assert result.cert is None
    assert result.error is not None
    assert result.error.startswith("not the loopback certificate (got CN=kube-apiserver")
    assert result.livez == "not-checked"
    assert api.requests == []


def test_another_server_name_gets_the_ordinary_certificate(standin: StandinFactory) -> None:
    api = standin()
    result = probe(api.host, api.port, "kubernetes", TIMEOUT)
    assert result.cert is None
    assert result.error == "not the loopback certificate (got CN=kube-apiserver)"


def test_without_sni_the_standin_serves_the_other_certificate(standin: StandinFactory) -> None:
    api = standin()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # The TLS socket takes over the TCP socket's descriptor, and closes it.
    with context.wrap_socket(socket.create_connection((api.host, api.port), timeout=5)) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == "CN=kube-apiserver"
    assert api.server_names == [None]


def test_ipv6_loopback(standin: StandinFactory, ipv6_loopback: str) -> None:
    api = standin(host=ipv6_loopback)
    result = _probe(ipv6_loopback, api.port)
    assert result.cert is not None and result.livez == "ok"
    assert result.host == "::1"
    bracketed = _probe("[::1]", api.port)
    assert bracketed.cert is not None


def test_a_hostname_is_resolved(standin: StandinFactory) -> None:
    api = standin()
    result = _probe("localhost", api.port)
    # localhost may resolve to ::1 first; the probe falls through to 127.0.0.1.
    assert result.cert is not None, result.error


def test_invalid_port_is_an_error_not_an_exception() -> None:
    result = _probe("127.0.0.1", 70000)
    assert result.cert is None and result.error == "invalid port 70000"


def test_unusable_server_name_is_an_error_not_an_exception(standin: StandinFactory) -> None:
    api = standin()
    result = probe(api.host, api.port, "", TIMEOUT)
    assert result.cert is None
    assert result.error is not None and result.error.startswith("cannot use server name ''")


# -- livez -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "livez"),
    [
        ({}, "ok"),
        ({"livez": "failed"}, "failed"),
        ({"expires_in": -timedelta(days=3)}, "failed"),
        # Upstream's check fails at start + lifetime, an hour after NotAfter.
        ({"expires_in": -timedelta(minutes=30)}, "ok"),
        ({"livez": "pre-1.36"}, "absent"),
        ({"anonymous_auth": False}, "forbidden"),
    ],
)
def test_livez_verdicts(standin: StandinFactory, options: Dict[str, Any], livez: str) -> None:
    api = standin(**options)
    result = _probe(api.host, api.port)
    assert result.cert is not None and result.error is None
    assert result.livez == livez
    # The aggregate endpoint, which default RBAC lets anyone read (not /livez/<check>).
    assert api.requests == [LIVEZ_TARGET]


def test_livez_can_be_skipped(standin: StandinFactory) -> None:
    api = standin()
    result = _probe(api.host, api.port, check_livez=False)
    assert result.cert is not None and result.livez == "not-checked"
    assert wait_until(lambda: api.handshakes == 1)
    assert api.requests == []


VERBOSE_OK = b"[+]ping ok\n[+]etcd ok\n[+]loopback-serving-certificate ok\nlivez check passed\n"
VERBOSE_FAILED = (
    b"[+]ping ok\n[-]loopback-serving-certificate failed: reason withheld\nlivez check failed\n"
)
VERBOSE_WITHOUT = b"[+]ping ok\n[+]etcd ok\nlivez check passed\n"


def _answer(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


def test_the_livez_request_is_plain_and_identifies_the_agent() -> None:
    with TlsScriptedPeer(_answer("200 OK", VERBOSE_OK)) as peer:
        result = _probe(peer.host, peer.port)
    assert result.livez == "ok"
    request = peer.requests[0].decode("ascii")
    lines = request.split("\r\n")
    assert lines[0] == f"GET {LIVEZ_TARGET} HTTP/1.1"
    assert f"Host: {LOOPBACK_SERVER_NAME}" in lines
    assert f"User-Agent: kube-loopback-guard/{agent.__version__}" in lines
    assert "Connection: close" in lines
    assert "Accept: text/plain" in lines


@pytest.mark.parametrize(
    ("response", "verdict"),
    [
        (_answer("200 OK", VERBOSE_OK), "ok"),
        (_answer("200 OK", VERBOSE_OK.replace(b"\n", b"\r\n")), "ok"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"13\r\n[+]loopback-serving\r\n"
            b"f\r\n-certificate ok\r\n0\r\n\r\n",
            "ok",
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + VERBOSE_OK, "ok"),
        (_answer("500 Internal Server Error", VERBOSE_FAILED), "failed"),
        (_answer("500 Internal Server Error", b"[-]etcd failed: reason withheld\n"), "absent"),
        (_answer("200 OK", VERBOSE_WITHOUT), "absent"),
        (_answer("200 OK", b"ok"), "absent"),
        (_answer("200 OK", b"[+]loopback-serving-certificate-v2 ok\n"), "absent"),
        (_answer("404 Not Found", b"404 page not found\n"), "error"),
        (_answer("401 Unauthorized", b""), "forbidden"),
        (b"HTTP/1.0 403 Forbidden\r\n\r\n", "forbidden"),
        (b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n", "error"),
        (_answer("503 Service Unavailable", VERBOSE_OK), "error"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + VERBOSE_OK, "error"),
        (b"", "error"),
        # Bounded: our line after more than HEALTH_LIMIT bytes is never reached.
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200_000, "error"),
        (_answer("200 OK", b"[+]ping ok\n" * (HEALTH_LIMIT // 11 + 1) + VERBOSE_OK), "error"),
    ],
)
def test_livez_responses(response: bytes, verdict: str) -> None:
    with TlsScriptedPeer(response) as peer:
        result = _probe(peer.host, peer.port)
    # Whatever livez says, the certificate result stands.
    assert result.cert is not None and result.error is None
    assert result.livez == verdict


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, VERBOSE_OK, "ok"),
        (500, VERBOSE_FAILED, "failed"),
        (200, b"[-]loopback-serving-certificate failed: x509: expired\n", "failed"),
        (500, b"", "absent"),
        (403, b"", "forbidden"),
        (204, VERBOSE_OK, "error"),
        (200, b"\xff\xfe[+]loopback-serving-certificate ok\x00\n", "absent"),
    ],
)
def test_livez_verdict_reads_the_check_line(status: int, body: bytes, verdict: str) -> None:
    assert livez_verdict(status, body) == verdict


def test_an_endless_livez_body_ends_at_the_limit_in_bounded_memory() -> None:
    with TlsEndlessChunkedPeer() as peer:
        tracemalloc.start()
        try:
            result, _ = _timed_probe(peer.port, timeout=TIMEOUT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.cert is not None and result.livez == "error"
    # The body stops at its limit (plus framing and buffers), not at the deadline.
    assert peak < 1024 * 1024, f"peak {peak} bytes"
    assert peer.sent < 4 * 1024 * 1024


# -- faulty peers: every one ends within the deadline --------------------------


def _timed_probe(port: int, timeout: float = DEADLINE) -> Tuple[ProbeResult, float]:
    started = time.monotonic()
    result = _probe("127.0.0.1", port, timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + SLACK, f"probe took {elapsed:.2f}s with a {timeout}s deadline"
    return result, elapsed


def test_connection_refused() -> None:
    result, _ = _timed_probe(closed_port())
    assert result.cert is None and result.livez == "not-checked"
    assert result.error == "connection refused"


def test_silent_peer_times_out_in_the_handshake() -> None:
    with SilentPeer() as peer:
        result, elapsed = _timed_probe(peer.port)
    assert result.cert is None
    assert result.error == "timed out after 1.0s during TLS handshake"
    assert elapsed >= DEADLINE - 0.1


def test_drip_feeding_peer_cannot_stretch_the_deadline() -> None:
    with DripPeer() as peer:
        result, elapsed = _timed_probe(peer.port)
    assert result.cert is None
    assert result.error == "timed out after 1.0s during TLS handshake"
    assert elapsed >= DEADLINE - 0.1


def test_plain_http_peer() -> None:
    with PlainHttpPeer() as peer:
        result, _ = _timed_probe(peer.port)
    assert result.cert is None
    assert result.error == "TLS handshake failed: the peer answered in plain HTTP"


def test_peer_resetting_during_the_handshake() -> None:
    with ResetPeer() as peer:
        result, _ = _timed_probe(peer.port)
    assert result.cert is None
    assert result.error == "connection reset by peer during TLS handshake"


def test_peer_drip_feeding_the_livez_response_keeps_the_certificate() -> None:
    with TlsDripResponsePeer() as peer:
        result, elapsed = _timed_probe(peer.port)
    assert result.cert is not None and result.error is None
    assert result.cert.not_after == peer.pair.not_after
    assert result.livez == "error"
    assert elapsed >= DEADLINE - 0.1


def test_peer_resetting_after_the_handshake_keeps_the_certificate() -> None:
    with TlsResetPeer() as peer:
        result, _ = _timed_probe(peer.port)
    assert result.cert is not None and result.error is None
    assert result.livez == "error"


def test_timeout_is_worded_with_its_precision() -> None:
    with SilentPeer() as peer:
        result, _ = _timed_probe(peer.port, timeout=0.25)
    assert result.error == "timed out after 0.25s during TLS handshake"


# -- a probe that runs forever in a daemon -------------------------------------


@pytest.fixture
def open_descriptors() -> Iterator[Callable[[], int]]:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    yield lambda: len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "peer_class", [SilentPeer, PlainHttpPeer, ResetPeer, TlsResetPeer, TlsDripResponsePeer]
)
def test_no_descriptor_leaks(
    standin: StandinFactory,
    open_descriptors: Callable[[], int],
    peer_class: Type[FaultyPeer],
) -> None:
    api = standin()
    refused = closed_port()
    _probe(api.host, api.port)
    _probe("127.0.0.1", refused)
    before = open_descriptors()
    with peer_class() as peer:
        for _ in range(3):
            _probe(api.host, api.port)
            _probe("127.0.0.1", refused)
            _probe(peer.host, peer.port, timeout=0.2)
    # The stand-in closes its ends on its own threads, a moment later.
    assert wait_until(lambda: open_descriptors() <= before)
