"""Recognise and read kube-apiserver's in-memory loopback certificate.

The apiserver generates it at start with client-go's
`GenerateSelfSignedCertKey("apiserver-loopback-client", ...)`: the leaf is
`CN=apiserver-loopback-client@<unix seconds>` with SAN DNS
`apiserver-loopback-client`, issued by `CN=apiserver-loopback-client-ca@<same>`.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from agent.model import EARLIEST_CERT_TIME, LOOPBACK_SERVER_NAME, LoopbackCert
from agent.text import one_line
from agent.timefmt import format_rfc3339

_LOOPBACK_CN = re.compile(r"apiserver-loopback-client@([0-9]{1,20})")


class NotLoopbackCert(ValueError):
    """The peer served a certificate, but not the apiserver's loopback one."""


def read_loopback_cert(der: bytes) -> LoopbackCert:
    """Given the DER bytes of a leaf certificate, return it as a LoopbackCert.

    The certificate counts as the loopback one when its CN is
    `apiserver-loopback-client@<digits>` or it names `apiserver-loopback-client`
    as a SAN DNS name. Raise NotLoopbackCert (naming the subject actually
    received) if it is another certificate, and ValueError if the bytes are not
    a certificate cryptography can read (whatever it raises), or its dates are
    implausible (before 1950, or not_after before not_before).
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography < 35 parses lazily: ask for the version so that an
        # unknown one fails here on every release, as it does at load on newer.
        cert.version  # noqa: B018
        # Chosen by whoever serves the certificate; they end up in STATUS=,
        # the plugin output and the journal, so one bounded line each.
        subject = one_line(cert.subject.rfc4514_string())
        issuer = one_line(cert.issuer.rfc4514_string())
        common_name = _common_name(cert)
        not_before = _utc_attribute(cert, "not_valid_before")
        not_after = _utc_attribute(cert, "not_valid_after")
        serial = format(cert.serial_number, "x")
        sha256 = cert.fingerprint(hashes.SHA256()).hex()
        dns_names = _san_dns_names(cert)
    except Exception as exc:
        # The bytes come from an unauthenticated peer: an unknown X.509
        # version (InvalidVersion is no ValueError), a bad date or anything
        # else the parser trips over is this target's error, never a crash.
        detail = one_line(str(exc)) or type(exc).__name__
        raise ValueError(f"cannot parse the peer certificate: {detail}") from exc

    match = _LOOPBACK_CN.fullmatch(common_name) if common_name is not None else None
    if match is None and LOOPBACK_SERVER_NAME not in dns_names:
        shown = subject or "an empty subject"
        raise NotLoopbackCert(f"not the loopback certificate (got {shown})")
    if not EARLIEST_CERT_TIME <= not_before <= not_after:
        # Such dates are no apiserver's; believed, they would give a negative
        # lifetime to learn, or dates before any apiserver existed. (A lifetime
        # above MAX_LIFETIME is read, but never learned: agent.state.records.)
        raise ValueError(
            f"implausible loopback certificate {subject}: not_before {format_rfc3339(not_before)}, "
            f"not_after {format_rfc3339(not_after)}"
        )

    return LoopbackCert(
        subject=subject,
        issuer=issuer,
        serial=serial,
        sha256=sha256,
        not_before=not_before,
        not_after=not_after,
        generated_at=_unix_time(match.group(1)) if match is not None else None,
    )


def _common_name(cert: x509.Certificate) -> Optional[str]:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else None


def _san_dns_names(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except Exception:
        # The certificate comes from an unauthenticated peer: a malformed or
        # duplicated extension (whose exception types vary between cryptography
        # releases) means "no usable SAN", not a crash of the probe.
        return []
    return list(extension.value.get_values_for_type(x509.DNSName))


def _utc_attribute(cert: x509.Certificate, name: str) -> datetime:
    # cryptography >= 42 has aware *_utc properties and deprecates the naive
    # ones; older releases (Debian's 3.3, 38) only have the naive UTC ones.
    aware = getattr(cert, name + "_utc", None)
    if isinstance(aware, datetime):
        return aware
    naive: datetime = getattr(cert, name)
    return naive.replace(tzinfo=timezone.utc)


def _unix_time(digits: str) -> Optional[datetime]:
    try:
        return datetime.fromtimestamp(int(digits), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        # A CN can carry any number; one beyond datetime's range is not a date.
        return None
