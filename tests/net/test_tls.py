"""Tests for agent.net.tls: connections to real peers on 127.0.0.1 and ::1.

Elapsed time is measured only where the contract is one deadline for the
whole exchange, whatever the peer does.
"""

from __future__ import annotations

import ssl
import time
from typing import Callable, Optional, Type

import pytest
from faulty_peers import DripPeer, FaultyPeer, PlainHttpPeer, ResetPeer, SilentPeer, closed_port

from agent.model import LOOPBACK_SERVER_NAME
from agent.net import tls, trust
from agent.standin.server import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]
DEADLINE = 1.0
SLACK = 0.5


def _connect(
    host: str,
    port: int,
    server_name: Optional[str] = LOOPBACK_SERVER_NAME,
    context: Optional[ssl.SSLContext] = None,
    timeout: float = 5.0,
) -> tls.TlsConnection:
    return tls.connect(
        host,
        port,
        server_name=server_name,
        context=context or trust.unverified_context(),
        deadline=tls.Deadline(timeout),
    )


def test_reads_the_served_certificate_without_trusting_it(standin: StandinFactory) -> None:
    api = standin(key_type="ec")
    with _connect(api.host, api.port) as connection:
        assert connection.peer_certificate() == api.pair.cert_der
    assert api.server_names == [LOOPBACK_SERVER_NAME]


def test_an_ip_sends_no_server_name(standin: StandinFactory) -> None:
    api = standin(key_type="ec")
    with _connect(api.host, api.port, server_name=None):
        pass
    assert api.server_names == [None]


def test_ipv6_and_host_names(standin: StandinFactory, ipv6_loopback: str) -> None:
    api = standin(host=ipv6_loopback, key_type="ec")
    with _connect(f"[{ipv6_loopback}]", api.port) as connection:
        assert connection.peer_certificate() == api.pair.cert_der
    v4 = standin(key_type="ec")
    # localhost may resolve to ::1 first: the next address is tried.
    with _connect("localhost", v4.port) as connection:
        assert connection.peer_certificate() == v4.pair.cert_der


def _failure(port: int, timeout: float = DEADLINE) -> tls.NetError:
    started = time.monotonic()
    with pytest.raises(tls.NetError) as raised:
        _connect("127.0.0.1", port, timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + SLACK, f"took {elapsed:.2f}s with a {timeout}s deadline"
    return raised.value


def test_refused() -> None:
    error = _failure(closed_port())
    assert (str(error), error.phase) == ("connection refused", "connect")


@pytest.mark.parametrize(
    ("peer_class", "message"),
    [
        (SilentPeer, "timed out after 1.0s during TLS handshake"),
        (DripPeer, "timed out after 1.0s during TLS handshake"),
        (PlainHttpPeer, "TLS handshake failed: the peer answered in plain HTTP"),
        (ResetPeer, "connection reset by peer during TLS handshake"),
    ],
)
def test_faulty_peers_end_within_the_deadline(peer_class: Type[FaultyPeer], message: str) -> None:
    with peer_class() as peer:
        error = _failure(peer.port)
    assert str(error) == message
    assert error.phase == "TLS handshake"
    assert isinstance(error, tls.NetTimeout) == message.startswith("timed out")


def test_unusable_names_are_errors() -> None:
    with SilentPeer() as peer, pytest.raises(tls.NetError, match="cannot use server name ''"):
        _connect("127.0.0.1", peer.port, server_name="")
    with pytest.raises(tls.NetError, match="cannot resolve"):
        _connect("no-such-host.invalid", 443, timeout=3)


@pytest.mark.parametrize(("timeout", "text"), [(1.0, "1.0s"), (0.25, "0.25s"), (10, "10.0s")])
def test_timeouts_are_worded_with_their_precision(timeout: float, text: str) -> None:
    assert tls.seconds(timeout) == text
