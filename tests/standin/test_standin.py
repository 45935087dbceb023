"""Tests for agent.standin: certificates shaped like client-go's, the server,
what it answers as default RBAC shows it, and the process."""

from __future__ import annotations

import json
import socket
import ssl
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faulty_peers import wait_until

from agent.observe.certificate import read_loopback_cert
from agent.standin.certs import make_loopback_pair
from agent.standin.server import StandinApiserver

T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
LIVEZ_CHECK = "/livez/loopback-serving-certificate"
LIVEZ_VERBOSE = "/livez?verbose"
MAX_INT64 = 2**63 - 1
StandinFactory = Callable[..., StandinApiserver]


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def _utc(cert: x509.Certificate, name: str) -> datetime:
    aware = getattr(cert, name + "_utc", None)
    if aware is not None:
        assert isinstance(aware, datetime)
        return aware
    naive = getattr(cert, name)
    assert isinstance(naive, datetime)
    return naive.replace(tzinfo=timezone.utc)


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    public_key = issuer.public_key()
    hash_algorithm = cert.signature_hash_algorithm
    assert hash_algorithm is not None
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_algorithm
        )
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_pair_has_the_upstream_shape(key_type: str) -> None:
    lifetime = timedelta(days=1096)
    started = T0.replace(microsecond=123456)
    pair = make_loopback_pair(started, lifetime, key_type)
    ca, leaf = _load(pair.ca_pem), _load(pair.cert_pem)
    ca_time, leaf_time = _cn_time(ca), _cn_time(leaf)

    # The unix time is read after each key generation: never before the
    # start, the leaf's never before the CA's.
    assert T0 <= ca_time <= leaf_time <= T0 + timedelta(seconds=30)
    assert _cn(ca) == f"apiserver-loopback-client-ca@{int(ca_time.timestamp())}"
    assert leaf.issuer == ca.subject == ca.issuer
    # Random 63-bit serials, as client-go since v1.28.
    assert 1 <= ca.serial_number <= MAX_INT64 and 1 <= leaf.serial_number <= MAX_INT64
    assert ca.serial_number != leaf.serial_number
    for cert in (ca, leaf):
        assert _utc(cert, "not_valid_before") == T0 - timedelta(hours=1)
        assert _utc(cert, "not_valid_after") == T0 - timedelta(hours=1) + lifetime
    assert (pair.started_at, pair.generated_at, pair.not_before, pair.lifetime) == (
        started,
        leaf_time,
        T0 - timedelta(hours=1),
        lifetime,
    )

    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.critical and ca_constraints.value.ca
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.digital_signature and ca_usage.key_encipherment
    assert not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length

    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["apiserver-loopback-client"]
    assert san.get_values_for_type(x509.IPAddress) == []
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    _verify_signed_by(ca, ca)
    _verify_signed_by(leaf, ca)
    public_key = leaf.public_key()
    if key_type == "rsa":
        assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
        assert pair.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
    assert pair.chain_pem == pair.cert_pem + pair.ca_pem


def _cn_time(cert: x509.Certificate) -> datetime:
    return datetime.fromtimestamp(int(_cn(cert).rsplit("@", 1)[1]), tz=timezone.utc)


def test_ca_and_leaf_times_can_be_a_second_apart() -> None:
    # Started at :53.5; the CA key takes 0.4 s (CN time :53.9, second 53),
    # the leaf key 0.3 s more (:54.2, second 54).
    pair = make_loopback_pair(
        T0.replace(microsecond=500000), timedelta(days=365), "ec", key_seconds=(0.4, 0.3)
    )
    ca, leaf = _load(pair.ca_pem), _load(pair.cert_pem)
    assert _cn_time(ca) == T0
    assert _cn_time(leaf) == pair.generated_at == T0 + timedelta(seconds=1)
    assert pair.not_before == T0 - timedelta(hours=1)


def test_serials_differ_between_pairs() -> None:
    serials = {
        _load(make_loopback_pair(T0, timedelta(days=1), "ec").cert_pem).serial_number
        for _ in range(5)
    }
    assert len(serials) == 5


@pytest.mark.parametrize(
    ("started_at", "lifetime", "key_type", "message"),
    [
        (datetime(2025, 1, 1), timedelta(days=365), "ec", "timezone-aware"),
        (T0, timedelta(0), "ec", "lifetime"),
        (T0, timedelta(days=365), "dsa", "key_type"),
    ],
)
def test_pair_refuses_bad_arguments(
    started_at: datetime, lifetime: timedelta, key_type: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_loopback_pair(started_at, lifetime, key_type)


# -- dates of the served certificate -------------------------------------------


def _around(actual: datetime, expected: datetime) -> bool:
    return abs(actual - expected) <= timedelta(seconds=2)


def test_expires_in_sets_the_remaining_time() -> None:
    now = datetime.now(timezone.utc)
    api = StandinApiserver(expires_in=timedelta(days=10), key_type="ec")
    assert _around(api.pair.not_after, now + timedelta(days=10))
    assert api.pair.lifetime == timedelta(days=365)


def test_default_is_three_hundred_days_left() -> None:
    api = StandinApiserver(key_type="ec", lifetime=timedelta(days=1096))
    assert _around(api.pair.not_after, datetime.now(timezone.utc) + timedelta(days=300))
    assert api.pair.lifetime == timedelta(days=1096)


def test_expired_certificate_dates() -> None:
    not_after = T0.replace(year=2024)
    api = StandinApiserver(not_after=not_after, key_type="ec")
    assert api.pair.not_after == not_after
    assert api.pair.started_at == not_after - timedelta(days=365) + timedelta(hours=1)


def test_explicit_start_time() -> None:
    api = StandinApiserver(started_at=T0, key_type="ec")
    assert api.pair.started_at == T0
    assert api.pair.not_before == T0 - timedelta(hours=1)
    assert T0 <= api.pair.generated_at <= T0 + timedelta(seconds=30)


def test_not_yet_valid() -> None:
    api = StandinApiserver(not_yet_valid=True, key_type="ec")
    assert api.pair.not_before > datetime.now(timezone.utc) + timedelta(hours=12)


def test_conflicting_date_options_are_refused() -> None:
    with pytest.raises(ValueError, match="at most one"):
        StandinApiserver(expires_in=timedelta(days=1), started_at=T0, key_type="ec")
    with pytest.raises(ValueError, match="at most one"):
        StandinApiserver(not_after=T0, not_yet_valid=True, key_type="ec")
    with pytest.raises(ValueError, match="livez"):
        StandinApiserver(livez="maybe", key_type="ec")


# -- serving -----------------------------------------------------------------


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _request(
    api: StandinApiserver,
    path: str,
    *,
    server_name: Optional[str] = "apiserver-loopback-client",
    method: str = "GET",
) -> Tuple[int, Dict[str, str], bytes, bytes]:
    """Return status, headers, body and the served leaf (DER) of one request."""
    raw = socket.create_connection((api.host, api.port), timeout=5)
    # The TLS socket takes over the TCP socket's descriptor, and closes it.
    with _client_context().wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers["connection"] == "close"
    if method != "HEAD":
        assert int(headers["content-length"]) == len(body)
    return int(lines[0].split(" ")[1]), headers, body, der


def _served_cn(der: bytes) -> str:
    return _cn(x509.load_der_x509_certificate(der))


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("apiserver-loopback-client", "apiserver-loopback-client@"),
        (None, "kube-apiserver"),
        ("kubernetes", "kube-apiserver"),
        ("localhost", "kube-apiserver"),
    ],
)
def test_loopback_certificate_only_for_the_loopback_sni(
    standin: StandinFactory, server_name: Optional[str], expected: str
) -> None:
    api = standin()
    _, _, _, der = _request(api, "/healthz", server_name=server_name)
    assert _served_cn(der).startswith(expected)
    assert api.server_names == [server_name]
    assert api.handshakes == 1
    assert api.loopback_handshakes == (1 if expected.endswith("@") else 0)


def test_served_loopback_certificate_is_the_pair(standin: StandinFactory) -> None:
    api = standin()
    _, _, _, der = _request(api, "/healthz")
    assert der == api.pair.cert_der
    assert read_loopback_cert(der).not_after == api.pair.not_after


def test_ignore_sni_serves_the_ordinary_certificate(standin: StandinFactory) -> None:
    api = standin(ignore_sni=True)
    _, _, _, der = _request(api, "/healthz")
    assert _served_cn(der) == "kube-apiserver"
    assert api.loopback_handshakes == 0


def _check_lines(body: bytes) -> Dict[str, str]:
    """Given a verbose health body, return {check: "ok" | "failed"}."""
    lines: Dict[str, str] = {}
    for line in body.decode().splitlines():
        if line.startswith(("[+]", "[-]")):
            name, _, rest = line[3:].partition(" ")
            lines[name] = "ok" if line.startswith("[+]") else rest
    return lines


@pytest.mark.parametrize(
    ("options", "status", "ours"),
    [
        ({}, 200, "ok"),
        ({"livez": "ok", "expires_in": -timedelta(days=3)}, 200, "ok"),
        ({"livez": "failed"}, 500, "failed: reason withheld"),
        ({"expires_in": -timedelta(days=3)}, 500, "failed: reason withheld"),
        ({"livez": "pre-1.36"}, 200, None),
    ],
)
def test_livez_verbose_lists_the_checks(
    standin: StandinFactory, options: Dict[str, object], status: int, ours: Optional[str]
) -> None:
    api = standin(**options)
    answered, _, body, _ = _request(api, LIVEZ_VERBOSE)
    assert answered == status
    checks = _check_lines(body)
    assert checks.get("loopback-serving-certificate") == ours
    assert checks["ping"] == checks["etcd"] == "ok"
    assert body.endswith(b"livez check passed\n" if status == 200 else b"livez check failed\n")
    assert api.requests == [LIVEZ_VERBOSE]


def test_livez_auto_fails_an_hour_after_not_after(standin: StandinFactory) -> None:
    # Upstream's deadline is start + lifetime; start is NotBefore + 1 h.
    api = standin(expires_in=-timedelta(minutes=30), key_type="ec")
    assert _check_lines(_request(api, LIVEZ_VERBOSE)[2])["loopback-serving-certificate"] == "ok"
    assert api.loopback_check(api.pair.not_after + timedelta(minutes=59)) is True
    assert api.loopback_check(api.pair.not_after + timedelta(hours=1, seconds=1)) is False


def test_a_failing_check_makes_plain_livez_verbose(standin: StandinFactory) -> None:
    api = standin(livez="failed")
    status, _, body, _ = _request(api, "/livez")
    assert status == 500
    assert b"[-]loopback-serving-certificate failed: reason withheld\n" in body
    assert _request(api, "/healthz")[0] == 500
    # /readyz does not carry the check.
    assert _request(api, "/readyz")[::2] == (200, b"ok")


def _status_document(body: bytes) -> Dict[str, object]:
    document = json.loads(body)
    assert isinstance(document, dict) and document["kind"] == "Status"
    return document


@pytest.mark.parametrize("livez", ["auto", "pre-1.36"])
def test_a_single_check_is_forbidden_to_anonymous(standin: StandinFactory, livez: str) -> None:
    # system:public-info-viewer grants /livez, not /livez/*; authorization runs
    # before routing, so an apiserver without the check answers 403 too.
    api = standin(livez=livez)
    status, headers, body, _ = _request(api, LIVEZ_CHECK)
    assert status == 403
    assert headers["content-type"] == "application/json"
    document = _status_document(body)
    assert (document["reason"], document["code"]) == ("Forbidden", 403)
    assert LIVEZ_CHECK in str(document["message"])


@pytest.mark.parametrize("path", [LIVEZ_VERBOSE, "/livez", "/readyz", LIVEZ_CHECK, "/version"])
def test_anonymous_auth_off_answers_401_to_everything(standin: StandinFactory, path: str) -> None:
    api = standin(anonymous_auth=False)
    status, _, body, _ = _request(api, path)
    assert status == 401
    assert (_status_document(body)["reason"]) == "Unauthorized"


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/livez", 200, b"ok"),
        ("GET", "/healthz", 200, b"ok"),
        ("GET", "/readyz", 200, b"ok"),
        ("GET", "/api/v1/namespaces", 403, None),
        ("GET", "/metrics", 403, None),
        ("GET", "/livez/ping", 403, None),
        # RBAC's verb is the method: public-info-viewer grants only get.
        ("HEAD", "/livez", 403, b""),
        ("POST", "/livez", 403, None),
    ],
)
def test_other_paths(
    standin: StandinFactory, method: str, path: str, status: int, body: Optional[bytes]
) -> None:
    api = standin()
    answered, _, content, _ = _request(api, path, method=method)
    assert answered == status
    if body is not None:
        assert content == body


def test_version_is_public(standin: StandinFactory) -> None:
    status, _, body, _ = _request(standin(), "/version")
    assert status == 200 and json.loads(body)["minor"] == "36"
    assert json.loads(_request(standin(livez="pre-1.36"), "/version")[2])["minor"] == "35"


def test_ipv6(standin: StandinFactory, ipv6_loopback: str) -> None:
    api = standin(host=ipv6_loopback)
    assert _request(api, "/livez")[::2] == (200, b"ok")


# -- lifecycle -----------------------------------------------------------------


def test_start_and_close_are_idempotent() -> None:
    api = StandinApiserver(key_type="ec")
    with pytest.raises(RuntimeError):
        api.port  # noqa: B018
    assert api.start() is api
    port = api.port
    assert api.start().port == port
    api.close()
    api.close()
    with pytest.raises(RuntimeError, match="closed"):
        api.start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_close_is_prompt_despite_a_silent_client() -> None:
    with StandinApiserver(key_type="ec", client_timeout=30) as api:
        silent = socket.create_connection((api.host, api.port), timeout=2)
        assert wait_until(lambda: api.connections == 1)
        started = time.monotonic()
    elapsed = time.monotonic() - started
    silent.close()
    assert elapsed < 1.0


def test_silent_client_is_dropped_after_the_client_timeout(standin: StandinFactory) -> None:
    api = standin(client_timeout=0.3)
    with socket.create_connection((api.host, api.port), timeout=3) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert time.monotonic() - started < 2


def test_connections_are_bounded(standin: StandinFactory) -> None:
    api = standin(max_connections=1, client_timeout=5)
    with socket.create_connection((api.host, api.port), timeout=3) as first:
        assert wait_until(lambda: api.connections == 1)
        with socket.create_connection((api.host, api.port), timeout=3) as second:
            # Over the bound: closed at once, not queued behind the silent one.
            assert second.recv(1) == b""
        first.sendall(b"\x00")
    assert api.connections == 1
