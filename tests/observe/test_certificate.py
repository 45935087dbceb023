"""Tests for agent.certificate: recognising and reading the loopback certificate."""

from __future__ import annotations

import hashlib
import warnings
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.observe.certificate import NotLoopbackCert, read_loopback_cert
from agent.standin.certs import make_loopback_pair, make_serving_pair

T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
_KEY = ec.generate_private_key(ec.SECP256R1())


def _der(
    attributes: List[x509.NameAttribute[str]],
    *,
    dns_names: Optional[List[str]] = None,
    serial: int = 1,
) -> bytes:
    """Return a self-signed certificate with the given subject and SAN names as DER."""
    name = x509.Name(attributes)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(datetime(2025, 1, 1))
        .not_valid_after(datetime(2026, 1, 1))
    )
    if dns_names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _cn(value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


def test_reads_a_pair_shaped_like_upstream() -> None:
    # The leaf's key took a second longer than the CA's, as upstream's may.
    pair = make_loopback_pair(T0, timedelta(days=365), key_type="ec", key_seconds=(0.2, 1.0))
    unix = int(T0.timestamp())

    cert = read_loopback_cert(pair.cert_der)

    assert cert.subject == f"CN=apiserver-loopback-client@{unix + 1}"
    assert cert.issuer == f"CN=apiserver-loopback-client-ca@{unix}"
    # The time in the CN, not NotBefore + 1 h.
    assert cert.generated_at == T0 + timedelta(seconds=1)
    assert cert.not_before == T0 - timedelta(hours=1)
    assert cert.not_after == T0 - timedelta(hours=1) + timedelta(days=365)
    assert cert.lifetime == timedelta(days=365)
    leaf = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.serial == format(leaf.serial_number, "x")
    assert cert.sha256 == hashlib.sha256(pair.cert_der).hexdigest()


@pytest.mark.parametrize("days", [365, 1096, 30 * 365])
def test_lifetime_is_read_from_the_certificate(days: int) -> None:
    pair = make_loopback_pair(T0, timedelta(days=days), key_type="ec")
    assert read_loopback_cert(pair.cert_der).lifetime == timedelta(days=days)


def test_dates_are_aware_utc_without_deprecation_warnings() -> None:
    pair = make_loopback_pair(T0, timedelta(days=365), key_type="ec")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = read_loopback_cert(pair.cert_der)
    for moment in (cert.not_before, cert.not_after, cert.generated_at):
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)


def test_recognised_by_the_san_alone() -> None:
    der = _der([_cn("some-vendor-loopback")], dns_names=["apiserver-loopback-client"])
    cert = read_loopback_cert(der)
    assert cert.subject == "CN=some-vendor-loopback"
    assert cert.generated_at is None


def test_recognised_by_the_cn_alone() -> None:
    cert = read_loopback_cert(_der([_cn("apiserver-loopback-client@1700000000")]))
    assert cert.generated_at == datetime.fromtimestamp(1700000000, tz=timezone.utc)


def test_a_cn_number_beyond_any_date_is_no_generation_time() -> None:
    cert = read_loopback_cert(_der([_cn("apiserver-loopback-client@99999999999999999999")]))
    assert cert.generated_at is None


def test_serial_is_lowercase_hex() -> None:
    der = _der([_cn("apiserver-loopback-client@1700000000")], serial=0xABCDEF0123)
    assert read_loopback_cert(der).serial == "abcdef0123"


def test_the_serving_certificate_is_rejected_naming_its_subject() -> None:
    pair = make_serving_pair(T0, key_type="ec")
    with pytest.raises(NotLoopbackCert) as caught:
        read_loopback_cert(pair.cert_der)
    assert str(caught.value) == "not the loopback certificate (got CN=kube-apiserver)"
    assert isinstance(caught.value, ValueError)


def test_the_loopback_ca_is_not_the_leaf() -> None:
    pair = make_loopback_pair(T0, timedelta(days=365), key_type="ec")
    ca_der = x509.load_pem_x509_certificate(pair.ca_pem).public_bytes(serialization.Encoding.DER)
    with pytest.raises(NotLoopbackCert, match="got CN=apiserver-loopback-client-ca@"):
        read_loopback_cert(ca_der)


@pytest.mark.parametrize(
    ("attributes", "dns_names", "shown"),
    [
        (
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme LB"), _cn("lb.example")],
            ["lb.example"],
            "got CN=lb.example,O=Acme LB",
        ),
        ([_cn("apiserver-loopback-client")], None, "got CN=apiserver-loopback-client)"),
        ([_cn("apiserver-loopback-client@soon")], None, "got CN=apiserver-loopback-client@soon"),
        ([], ["kubernetes"], "got an empty subject"),
    ],
)
def test_other_certificates_are_rejected(
    attributes: List[x509.NameAttribute[str]], dns_names: Optional[List[str]], shown: str
) -> None:
    with pytest.raises(NotLoopbackCert) as caught:
        read_loopback_cert(_der(attributes, dns_names=dns_names))
    assert str(caught.value).startswith("not the loopback certificate (")
    assert shown in str(caught.value)


@pytest.mark.parametrize("der", [b"", b"not a certificate", b"\x30\x82\x01\x00" + b"\x00" * 10])
def test_garbage_is_a_value_error_not_a_wrong_certificate(der: bytes) -> None:
    with pytest.raises(ValueError, match="cannot parse the peer certificate") as caught:
        read_loopback_cert(der)
    assert not isinstance(caught.value, NotLoopbackCert)


def _dated(not_before: datetime, not_after: datetime) -> bytes:
    name = x509.Name([_cn("apiserver-loopback-client@1767952693")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(_KEY, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def _utc_time(moment: datetime) -> bytes:
    return b"\x17\x0d" + moment.strftime("%y%m%d%H%M%SZ").encode()


def _inverted() -> bytes:
    """A certificate whose not_after precedes its not_before (the builder
    refuses to make one, so the two dates are swapped in the DER; the
    signature no longer matches, which nothing here checks)."""
    before, after = datetime(2026, 1, 9, 8, 58, 13), datetime(2027, 1, 9, 8, 58, 13)
    der = _dated(before, after)
    validity = _utc_time(before) + _utc_time(after)
    assert der.count(validity) == 1
    return der.replace(validity, _utc_time(after) + _utc_time(before))


def _generalized(year: int) -> bytes:
    """A certificate valid from 1 January of `year` (GeneralizedTime, which
    the builder writes only from 2050 on), to 2027, the DER lengths fixed up."""
    before, after = datetime(2026, 1, 9, 8, 58, 13), datetime(2027, 1, 9, 8, 58, 13)
    der = bytearray(_dated(before, after))
    old = _utc_time(before)
    new = b"\x18\x0f" + f"{year:04d}0101000000Z".encode()
    at = der.index(old)
    assert der[at - 2] == 0x30  # the Validity SEQUENCE, short form
    der[at - 1] += len(new) - len(old)
    der[at : at + len(old)] = new
    # Certificate and TBSCertificate: long-form lengths with one or two bytes.
    for offset in (0, 4 if der[1] == 0x82 else 3):
        width = der[offset + 1] - 0x80
        length = int.from_bytes(der[offset + 2 : offset + 2 + width], "big") + len(new) - len(old)
        der[offset + 2 : offset + 2 + width] = length.to_bytes(width, "big")
    return bytes(der)


def test_a_certificate_whose_dates_are_inverted_is_refused() -> None:
    # A lifetime below zero, which the state file refused to read back (9.1).
    with pytest.raises(ValueError, match="implausible loopback certificate CN=apiserver"):
        read_loopback_cert(_inverted())


@pytest.mark.parametrize("year", [1, 999, 1949])
def test_a_certificate_dated_before_1950_is_refused(year: int) -> None:
    # Newer cryptography may refuse the date itself; either way, no LoopbackCert.
    with pytest.raises(ValueError, match=r"implausible loopback certificate|cannot parse"):
        read_loopback_cert(_generalized(year))


def test_the_x509_no_expiry_date_is_read() -> None:
    # RFC 5280's "no well-defined expiration": 9999-12-31T23:59:59Z.
    cert = read_loopback_cert(_dated(datetime(2026, 1, 9), datetime(9999, 12, 31, 23, 59, 59)))
    assert cert.not_after == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
