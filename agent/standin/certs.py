"""The certificates a stand-in kube-apiserver serves, built as upstream builds them.

`make_loopback_pair` shapes a CA and leaf the way client-go's
`GenerateSelfSignedCertKey` does for kube-apiserver's loopback client;
`make_serving_pair` is the ordinary serving certificate every other client
gets; `server_context` serves either over TLS. The stand-in (`agent.standin`)
and the test suite's peers use them.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address, IPv6Address
from typing import Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.model import LOOPBACK_SERVER_NAME

__all__ = ["LoopbackPair", "make_loopback_pair", "make_serving_pair", "server_context"]

_PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class LoopbackPair:
    """A CA, its leaf and the leaf key as PEM, with the leaf's validity (UTC),
    the start it was made at and the time in its CN (`generated_at`)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    generated_at: datetime
    not_before: datetime
    not_after: datetime
    started_at: datetime

    @property
    def chain_pem(self) -> bytes:
        """The leaf followed by its CA: what the apiserver sends in the handshake."""
        return self.cert_pem + self.ca_pem

    @property
    def cert_der(self) -> bytes:
        """The leaf certificate as DER, as a TLS client receives it."""
        return ssl.PEM_cert_to_DER_cert(self.cert_pem.decode("ascii"))

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


def make_loopback_pair(
    started_at: datetime,
    lifetime: timedelta,
    key_type: str = "rsa",
    *,
    key_seconds: Optional[Tuple[float, float]] = None,
) -> LoopbackPair:
    """Given the apiserver's start, the lifetime (upstream's maxAge), a key
    type and how long each key generation takes (None: as measured), return
    a loopback CA and leaf shaped like client-go's.

    As client-go's `GenerateSelfSignedCertKeyWithFixtures` since v1.28: both
    valid from start - 1 h (whole seconds, as encoded) for `lifetime`; random
    63-bit serials; CA `CN=apiserver-loopback-client-ca@<t1>` (CA:TRUE,
    digital signature + key encipherment + cert sign), leaf
    `CN=apiserver-loopback-client@<t2>` (CA:FALSE, server auth, SAN DNS
    `apiserver-loopback-client`), where t1 and t2 are the unix times read
    after each key generation: at least start, so at least NotBefore + 1 h,
    and t2 may be a second after t1. key_type is "rsa" (2048 bits, upstream's
    default) or "ec" (P-256, fast). Raise ValueError if started_at is naive,
    lifetime is not positive, or key_type is unknown.
    """
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    if lifetime <= timedelta(0):
        raise ValueError("lifetime must be positive")
    started_at = started_at.astimezone(timezone.utc)
    not_before = started_at.replace(microsecond=0) - timedelta(hours=1)
    not_after = not_before + lifetime
    began = time.monotonic()

    def clock(step: int) -> datetime:
        # The clock the generator reads, running from started_at.
        measured = time.monotonic() - began
        elapsed = measured if key_seconds is None else sum(key_seconds[: step + 1])
        return (started_at + timedelta(seconds=elapsed)).replace(microsecond=0)

    ca_key = _new_key(key_type)
    ca_time = clock(0)
    ca_name = _cn(f"{LOOPBACK_SERVER_NAME}-ca@{int(ca_time.timestamp())}")
    ca_cert = _sign(
        _ca_builder(ca_name, ca_key, serial=_serial(), not_before=not_before, not_after=not_after),
        ca_key,
    )
    leaf_key = _new_key(key_type)
    leaf_time = clock(1)
    leaf_cert = _sign(
        _leaf_builder(
            _cn(f"{LOOPBACK_SERVER_NAME}@{int(leaf_time.timestamp())}"),
            leaf_key,
            ca_cert,
            serial=_serial(),
            not_before=not_before,
            not_after=not_after,
            sans=[x509.DNSName(LOOPBACK_SERVER_NAME)],
        ),
        ca_key,
    )
    return LoopbackPair(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=leaf_cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(leaf_key),
        generated_at=leaf_time,
        not_before=not_before,
        not_after=not_after,
        started_at=started_at,
    )


def _serial() -> int:
    # client-go: uniform in [1, MaxInt64), since v1.28 (before, 1 and 2).
    return secrets.randbelow(2**63 - 2) + 1


def make_serving_pair(now: datetime, key_type: str = "rsa") -> LoopbackPair:
    """Given the current time and a key type, return an ordinary apiserver
    serving certificate (`CN=kube-apiserver`, SANs kubernetes…, localhost,
    127.0.0.1, ::1) issued by its own `CN=kubernetes` CA, valid for a year.

    It is what an apiserver serves to clients without the loopback SNI.
    """
    now = now.astimezone(timezone.utc).replace(microsecond=0)
    not_before = now - timedelta(hours=1)
    not_after = now + timedelta(days=365)
    ca_key = _new_key(key_type)
    ca_cert = _sign(
        _ca_builder(
            _cn("kubernetes"), ca_key, serial=1, not_before=not_before, not_after=not_after
        ),
        ca_key,
    )
    key = _new_key(key_type)
    sans: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        )
    ]
    sans += [x509.IPAddress(IPv4Address("127.0.0.1")), x509.IPAddress(IPv6Address("::1"))]
    cert = _sign(
        _leaf_builder(
            _cn("kube-apiserver"),
            key,
            ca_cert,
            serial=2,
            not_before=not_before,
            not_after=not_after,
            sans=sans,
        ),
        ca_key,
    )
    return LoopbackPair(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
        generated_at=now,
        not_before=not_before,
        not_after=not_after,
        started_at=now,
    )


def _new_key(key_type: str) -> _PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key_type {key_type!r} (expected 'rsa' or 'ec')")


def _key_pem(key: _PrivateKey) -> bytes:
    # Upstream writes PKCS#1 "RSA PRIVATE KEY"; TraditionalOpenSSL gives that
    # (and SEC1 "EC PRIVATE KEY" for P-256).
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cn(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _naive(moment: datetime) -> datetime:
    # cryptography 3.3 reads naive datetimes as UTC; newer releases accept both.
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: _PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """What CA and leaf share: names, key, serial, dates, and Go's key usage
    (digital signature + key encipherment, plus cert sign for a CA)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_naive(not_before))
        .not_valid_after(_naive(not_after))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _ca_builder(
    name: x509.Name,
    key: _PrivateKey,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    # Go marks key usage and basic constraints critical and adds a subject
    # key identifier to CA certificates; do the same.
    return (
        _base_builder(name, name, key, serial, not_before, not_after, ca=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _leaf_builder(
    name: x509.Name,
    key: _PrivateKey,
    issuer: x509.Certificate,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    sans: list[x509.GeneralName],
) -> x509.CertificateBuilder:
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _base_builder(name, issuer.subject, key, serial, not_before, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )


def _sign(builder: x509.CertificateBuilder, key: _PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def server_context(pair: LoopbackPair) -> ssl.SSLContext:
    """Given a certificate pair, return a TLS server context serving its chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    # load_cert_chain only reads files (Python 3.9 has no in-memory variant);
    # the directory is private to us and removed right away.
    with tempfile.TemporaryDirectory(prefix="klg-standin-") as directory:
        chain_path = os.path.join(directory, "chain.pem")
        key_path = os.path.join(directory, "key.pem")
        with open(chain_path, "wb") as chain_file:
            chain_file.write(pair.chain_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(pair.key_pem)
        context.load_cert_chain(chain_path, key_path)
    return context
