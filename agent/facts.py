"""What the agent observes about one apiserver: its process and its certificate.

These are plain, frozen values. Discovery (`agent.discover`) and the probe
(`agent.probe`) produce them; assessment (`agent.assess`) judges them. Every
datetime here is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Optional

# The upstream verdict of GET /livez/loopback-serving-certificate (v1.36+):
# ok (200 "ok"), failed (500), absent (404, apiserver older than v1.36),
# forbidden (401/403: anonymous access is off, which is normal), error
# (anything else), not-checked (no TLS session to ask on).
LivezVerdict = Literal["ok", "failed", "absent", "forbidden", "error", "not-checked"]

LOOPBACK_SERVER_NAME = "apiserver-loopback-client"
# kube-apiserver's --secure-port default.
DEFAULT_SECURE_PORT = 6443


@dataclass(frozen=True)
class ApiserverProcess:
    """A running apiserver process as seen in /proc."""

    pid: int
    name: str
    started_at: datetime
    secure_port: Optional[int]
    bind_address: Optional[str]


@dataclass(frozen=True)
class LoopbackCert:
    """The leaf certificate an apiserver served for the loopback SNI."""

    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: datetime
    not_after: datetime
    # The unix time in `CN=apiserver-loopback-client@<t>`, when present.
    generated_at: Optional[datetime]

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one TLS probe: a certificate, or the reason there is none."""

    host: str
    port: int
    server_name: str
    cert: Optional[LoopbackCert]
    livez: LivezVerdict
    error: Optional[str]

    @property
    def ok(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class TargetFacts:
    """Everything observed about one target in one check."""

    target: str
    process: Optional[ApiserverProcess]
    discovery_error: Optional[str]
    probe: Optional[ProbeResult]
