"""Tests for agent.net.trust: contexts that verify, or do not, against real
TLS servers on 127.0.0.1."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Callable, Optional

import pytest

from agent.net import tls, trust
from agent.standin.server import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]


def _connect(
    host: str, port: int, server_name: Optional[str], context: ssl.SSLContext
) -> tls.TlsConnection:
    return tls.connect(
        host, port, server_name=server_name, context=context, deadline=tls.Deadline(5.0)
    )


def test_the_unverified_context_is_built_once() -> None:
    assert trust.unverified_context() is trust.unverified_context()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_verified_context_checks_chain_and_name(standin: StandinFactory, tmp_path: Path) -> None:
    api = standin(key_type="ec")
    trusted = trust.client_context(ca_pem=api.serving_pair.ca_pem)
    with _connect(api.host, api.port, server_name="kubernetes", context=trusted):
        pass
    with _connect(api.host, api.port, server_name=None, context=trusted):
        pass  # 127.0.0.1 is among the serving certificate's SANs
    from_file = trust.client_context(ca_file=_write(tmp_path / "ca.pem", api.serving_pair.ca_pem))
    with _connect(api.host, api.port, server_name="localhost", context=from_file):
        pass

    with pytest.raises(tls.UntrustedPeer, match="Hostname mismatch"):
        _connect(api.host, api.port, server_name="etcd.example", context=trusted)
    wrong_ca = trust.client_context(ca_pem=api.pair.ca_pem)
    with pytest.raises(tls.UntrustedPeer) as raised:
        _connect(api.host, api.port, server_name="kubernetes", context=wrong_ca)
    assert str(raised.value).startswith("certificate not trusted: ")
    assert raised.value.phase == "TLS handshake"


def test_contexts_that_cannot_be_built(standin: StandinFactory, tmp_path: Path) -> None:
    api = standin(key_type="ec")
    with pytest.raises(trust.TlsSetupError) as missing:
        trust.client_context(ca_file=str(tmp_path / "absent.pem"))
    assert missing.value.what == "certificate authority"
    with pytest.raises(trust.TlsSetupError) as garbage:
        trust.client_context(ca_pem=b"not a certificate")
    assert garbage.value.what == "certificate authority"
    # A certificate with another certificate's key.
    mismatched = api.pair.cert_pem + api.serving_pair.key_pem
    with pytest.raises(trust.TlsSetupError) as pair:
        trust.client_context(ca_pem=api.serving_pair.ca_pem, client_pem=mismatched)
    assert pair.value.what == "client certificate and key"
    # verify=False loads no CA at all.
    assert trust.client_context(verify=False, ca_file=str(tmp_path / "absent.pem"))
