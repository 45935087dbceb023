"""Tests for agent.net.tls: connections to real peers on 127.0.0.1 and ::1.

Elapsed time is measured only where the contract is one deadline for the
whole exchange, whatever the peer does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Type

import pytest
from faulty_peers import DripPeer, FaultyPeer, PlainHttpPeer, ResetPeer, SilentPeer, closed_port

from agent.model import LOOPBACK_SERVER_NAME
from agent.net import tls
from agent.standin.server import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]
DEADLINE = 1.0
SLACK = 0.5


def _connect(
    host: str,
    port: int,
    server_name: Optional[str] = LOOPBACK_SERVER_NAME,
    context: Optional[tls.ssl.SSLContext] = None,
    timeout: float = 5.0,
) -> tls.TlsConnection:
    return tls.connect(
        host,
        port,
        server_name=server_name,
        context=context or tls.unverified_context(),
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


def test_the_unverified_context_is_built_once() -> None:
    assert tls.unverified_context() is tls.unverified_context()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_verified_context_checks_chain_and_name(standin: StandinFactory, tmp_path: Path) -> None:
    api = standin(key_type="ec")
    trusted = tls.client_context(ca_pem=api.serving_pair.ca_pem)
    with _connect(api.host, api.port, server_name="kubernetes", context=trusted):
        pass
    with _connect(api.host, api.port, server_name=None, context=trusted):
        pass  # 127.0.0.1 is among the serving certificate's SANs
    from_file = tls.client_context(ca_file=_write(tmp_path / "ca.pem", api.serving_pair.ca_pem))
    with _connect(api.host, api.port, server_name="localhost", context=from_file):
        pass

    with pytest.raises(tls.UntrustedPeer, match="Hostname mismatch"):
        _connect(api.host, api.port, server_name="etcd.example", context=trusted)
    wrong_ca = tls.client_context(ca_pem=api.pair.ca_pem)
    with pytest.raises(tls.UntrustedPeer) as raised:
        _connect(api.host, api.port, server_name="kubernetes", context=wrong_ca)
    assert str(raised.value).startswith("certificate not trusted: ")
    assert raised.value.phase == "TLS handshake"


def test_contexts_that_cannot_be_built(standin: StandinFactory, tmp_path: Path) -> None:
    api = standin(key_type="ec")
    with pytest.raises(tls.TlsSetupError) as missing:
        tls.client_context(ca_file=str(tmp_path / "absent.pem"))
    assert missing.value.what == "certificate authority"
    with pytest.raises(tls.TlsSetupError) as garbage:
        tls.client_context(ca_pem=b"not a certificate")
    assert garbage.value.what == "certificate authority"
    # A certificate with another certificate's key.
    mismatched = api.pair.cert_pem + api.serving_pair.key_pem
    with pytest.raises(tls.TlsSetupError) as pair:
        tls.client_context(ca_pem=api.serving_pair.ca_pem, client_pem=mismatched)
    assert pair.value.what == "client certificate and key"
    # verify=False loads no CA at all.
    assert tls.client_context(verify=False, ca_file=str(tmp_path / "absent.pem"))


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
