"""Build X.509 certificates byte by byte, with fields no certificate builder allows.

cryptography's CertificateBuilder refuses negative or huge serials, versions
other than v1/v3, and dates outside 1950..9999 in the form the standard asks;
a peer can send all of them. This writes the DER itself (RFC 5280's
TBSCertificate) and signs it for real, so OpenSSL serves it and the probe
reads it as a peer would send it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey]

CN = "2.5.4.3"
O = "2.5.4.10"  # noqa: E741 - the attribute's name
SAN = "2.5.29.17"
BASIC_CONSTRAINTS = "2.5.29.19"

# (tag, bytes) of a DirectoryString: 0x0c UTF8String, 0x13 PrintableString,
# 0x16 IA5String, 0x1e BMPString, 0x14 TeletexString.
NameValue = Tuple[int, bytes]


def tlv(tag: int, content: bytes) -> bytes:
    """Given a tag byte and contents, return the DER element."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def integer(value: int) -> bytes:
    """Given any int, return it as a DER INTEGER (minimal two's complement)."""
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def name(attributes: List[Tuple[str, NameValue]]) -> bytes:
    """Given (OID, (string tag, bytes)) pairs, return a Name, one attribute per RDN."""
    return seq(*(tlv(0x31, seq(oid(kind), tlv(tag, value))) for kind, (tag, value) in attributes))


def time_field(year: int, month: int, day: int, form: str) -> bytes:
    """Given a date and "utc" (YYMMDD, years 1950..2049 by RFC 5280) or
    "generalized" (YYYYMMDD), return the time element at 00:00:00Z."""
    if form == "utc":
        return tlv(0x17, f"{year % 100:02d}{month:02d}{day:02d}000000Z".encode())
    return tlv(0x18, f"{year:04d}{month:02d}{day:02d}000000Z".encode())


@dataclass
class CertSpec:
    """What to put in a certificate; every field is written as given."""

    key: PrivateKey
    version: Optional[int] = 2  # the v3 encoding; None: field left out (v1)
    serial: int = 1
    issuer: List[Tuple[str, NameValue]] = field(default_factory=list)
    subject: List[Tuple[str, NameValue]] = field(default_factory=list)
    not_before: bytes = b""
    not_after: bytes = b""
    dns_names: List[bytes] = field(default_factory=list)
    san_twice: bool = False


def _algorithm(key: PrivateKey) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return seq(oid("1.2.840.10045.4.3.2"))  # ecdsa-with-SHA256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return seq(oid("1.3.101.112"))
    return seq(oid("1.2.840.113549.1.1.11"), tlv(0x05, b""))  # sha256WithRSAEncryption


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, PKCS1v15(), hashes.SHA256())


def certificate(spec: CertSpec) -> bytes:
    """Given a spec, return the signed certificate as DER."""
    spki = spec.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    extensions = []
    if spec.dns_names:
        names = seq(*(tlv(0x82, dns) for dns in spec.dns_names))
        extensions.append(seq(oid(SAN), tlv(0x04, names)))
        if spec.san_twice:
            extensions.append(seq(oid(SAN), tlv(0x04, names)))
    parts = []
    if spec.version is not None:
        parts.append(tlv(0xA0, integer(spec.version)))
    parts += [
        integer(spec.serial),
        _algorithm(spec.key),
        name(spec.issuer),
        seq(spec.not_before, spec.not_after),
        name(spec.subject),
        spki,
    ]
    if extensions:
        parts.append(tlv(0xA3, seq(*extensions)))
    tbs = seq(*parts)
    signature = tlv(0x03, b"\x00" + _sign(spec.key, tbs))
    return seq(tbs, _algorithm(spec.key), signature)


def pem(der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    ).encode()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
