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
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, Tuple, Type

import pytest
from cryptography import x509
from faulty_peers import (
    DripPeer,
    FaultyPeer,
    PlainHttpPeer,
    ResetPeer,
    SilentPeer,
    TlsDripResponsePeer,
    TlsResetPeer,
    TlsScriptedPeer,
    closed_port,
    wait_until,
)

import agent
from agent.model import LOOPBACK_SERVER_NAME, ProbeResult
from agent.observe import probe as probe_module
from agent.observe.probe import probe
from agent.standin.server import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]
LIVEZ_CHECK = "/livez/loopback-serving-certificate"
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

    assert result.ok and result.error is None
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
    assert result.error is not None and result.error.startswith("cannot probe")


# -- livez -------------------------------------------------------------------


@pytest.mark.parametrize("livez", ["ok", "failed", "absent", "forbidden"])
def test_livez_verdicts(standin: StandinFactory, livez: str) -> None:
    api = standin(livez=livez)
    result = _probe(api.host, api.port)
    assert result.cert is not None and result.error is None
    assert result.livez == livez
    assert api.requests == [LIVEZ_CHECK]


def test_livez_can_be_skipped(standin: StandinFactory) -> None:
    api = standin()
    result = _probe(api.host, api.port, check_livez=False)
    assert result.cert is not None and result.livez == "not-checked"
    assert wait_until(lambda: api.handshakes == 1)
    assert api.requests == []


def test_the_livez_request_is_plain_and_identifies_the_agent() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with TlsScriptedPeer(response) as peer:
        result = _probe(peer.host, peer.port)
    assert result.livez == "ok"
    request = peer.requests[0].decode("ascii")
    lines = request.split("\r\n")
    assert lines[0] == f"GET {LIVEZ_CHECK} HTTP/1.1"
    assert f"Host: {LOOPBACK_SERVER_NAME}" in lines
    assert f"User-Agent: kube-loopback-guard/{agent.__version__}" in lines
    assert "Connection: close" in lines
    assert "Accept: text/plain" in lines


@pytest.mark.parametrize(
    ("response", "verdict"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", "ok"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
            "ok",
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", "ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnot ok", "error"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200_000, "error"),
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "failed"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "absent"),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", "forbidden"),
        (b"HTTP/1.0 403 Forbidden\r\n\r\n", "forbidden"),
        (b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n", "error"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "error"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok", "error"),
        (b"", "error"),
    ],
)
def test_livez_responses(response: bytes, verdict: str) -> None:
    with TlsScriptedPeer(response) as peer:
        result = _probe(peer.host, peer.port)
    # Whatever livez says, the certificate result stands.
    assert result.cert is not None and result.error is None
    assert result.livez == verdict


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


def test_tls_context_is_built_once() -> None:
    assert probe_module._tls_context() is probe_module._tls_context()


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
