"""The domain's values: what the agent observes about an apiserver, and its verdict.

Plain, frozen values. Discovery (`agent.observe.discover`) and the probe
(`agent.observe.probe`) produce the facts; assessment (`agent.judge.assess`)
turns them into an `Assessment`; `agent.check` bundles them as a `CheckReport`
that every reporter renders. Every datetime here is timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import List, Literal, Optional, Protocol, Tuple

from agent.config.types import TargetConfig, Thresholds
from agent.record import dataclass

# The verdict of upstream's loopback-serving-certificate check (v1.36+), from
# its line in GET /livez?verbose: ok ("[+]… ok"), failed ("[-]… failed", HTTP
# 500), absent (a 200 or 500 without the line: apiserver older than v1.36),
# forbidden (401/403: anonymous access is off, which is normal), error
# (anything else), not-checked (no TLS session to ask on).
LivezVerdict = Literal["ok", "failed", "absent", "forbidden", "error", "not-checked"]

LOOPBACK_SERVER_NAME = "apiserver-loopback-client"
# kube-apiserver back-dates its loopback certificate by one hour.
BACKDATE = timedelta(hours=1)
# How far not_before may sit from start − 1 h before we say so.
CROSS_CHECK_TOLERANCE = timedelta(minutes=10)
# The shortest lifetime upstream ever used; the safe guess when nothing is known.
DEFAULT_LIFETIME = timedelta(days=365)
# The longest certificate lifetime the agent believes (vendors patch upstream's
# 1096 days up to 30 years); also the config's maximum `lifetime`.
MAX_LIFETIME = timedelta(days=100 * 365)
# X.509 UTCTime starts in 1950; a loopback certificate dated earlier is not one.
EARLIEST_CERT_TIME = datetime(1950, 1, 1, tzinfo=timezone.utc)
# kube-apiserver's --secure-port default.
DEFAULT_SECURE_PORT = 6443


# psutil derives a start time from the kernel's boot time, which Linux
# recomputes from the wall clock on every read (psutil >= 7 on every
# create_time() call), so the same process can appear to have started a
# second earlier or later (psutil #2526, #2541); the boot time is whole
# seconds, so two readings can differ by up to two. A PID reused within two
# seconds of the same start time is not a realistic risk.
SAME_START_TOLERANCE = timedelta(seconds=2)


class ProcessIdentity(Protocol):
    """Anything that names one process: a PID and when it started."""

    @property
    def pid(self) -> int: ...

    @property
    def started_at(self) -> datetime: ...


def same_process(a: Optional[ProcessIdentity], b: Optional[ProcessIdentity]) -> bool:
    """Given two process identities, return whether they are the same process:
    same PID, start times within SAME_START_TOLERANCE. None matches nothing.

    The one definition discovery, restart verification, the PID-checked
    SIGTERM and the state records use.
    """
    if a is None or b is None:
        return False
    return a.pid == b.pid and abs(a.started_at - b.started_at) <= SAME_START_TOLERANCE


@dataclass(frozen=True)
class ApiserverProcess:
    """A running apiserver process as seen in /proc.

    `kind` is its shape (`agent.observe.shapes`; "" when it was found by
    name only), `hosts` the addresses to probe it at, in order (empty: from
    the target), `unreachable` why the host cannot reach it (an apiserver
    listening only on its own pod's loopback), `label` its stable target name.
    """

    pid: int
    name: str
    started_at: datetime
    secure_port: Optional[int]
    bind_address: Optional[str]
    kind: str = ""
    hosts: Tuple[str, ...] = ()
    unreachable: Optional[str] = None
    label: str = ""


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


@dataclass(frozen=True)
class TargetFacts:
    """Everything observed about one target in one check."""

    target: str
    process: Optional[ApiserverProcess]
    discovery_error: Optional[str]
    probe: Optional[ProbeResult]


@dataclass(frozen=True)
class TargetReport:
    """One target's facts and what they mean."""

    target: TargetConfig
    facts: TargetFacts
    assessment: Assessment


@dataclass(frozen=True)
class CheckReport:
    """One check of every target, at one moment, against one set of thresholds."""

    checked_at: datetime
    thresholds: Thresholds
    targets: Tuple[TargetReport, ...]

    @property
    def state(self) -> State:
        return worst([t.assessment.state for t in self.targets])


class State(str, Enum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        """Rank for "the worst state wins": expired > critical > unknown > warning > ok."""
        return _SEVERITY[self]


_SEVERITY = {
    State.OK: 0,
    State.WARNING: 1,
    State.UNKNOWN: 2,
    State.CRITICAL: 3,
    State.EXPIRED: 4,
}


def worst(states: List[State]) -> State:
    """Given states, return the worst; OK for none."""
    return max(states, key=lambda s: s.severity, default=State.OK)


class Source(str, Enum):
    """What an assessment rests on: the served certificate, an estimate from
    the process start time, or nothing."""

    PROBE = "probe"
    PROCESS_START = "process-start"
    NONE = "none"

    def __str__(self) -> str:
        # The same text in f-strings on every Python (3.12 changed format()).
        return self.value


@dataclass(frozen=True)
class Assessment:
    """How one target's certificate stands, why, and on what evidence."""

    target: str
    state: State
    source: Source
    not_before: Optional[datetime]
    not_after: Optional[datetime]
    seconds_left: Optional[float]
    lifetime: Optional[timedelta]
    summary: str  # one line, the reason for the state
    notes: tuple[str, ...]
    error: Optional[str]
