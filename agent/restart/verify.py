"""Was the restart a success? A new process, a later certificate, /readyz ok.

readyz() asks an apiserver's GET /readyz over TLS under one deadline, trusting
nothing unless a CA file is given (for peers, with peer_ca). verify_restart()
polls, with the clock and the three observations passed in, until the restart
shows or its deadline passes, and says in one line what it saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from agent.model import BACKDATE, ApiserverProcess, LoopbackCert, ProbeResult, same_process
from agent.net import http, tls, trust
from agent.report.output import rfc3339

__all__ = [
    "ReadyzResult",
    "Verification",
    "issued_since",
    "peer_address",
    "readyz",
    "readyz_url",
    "verify_restart",
]

READYZ_PATH = "/readyz"
# Clocks and psutil's start times disagree by a second or two; the CN's time
# is read after key generation, so it only ever runs late.
_CLOCK_SLACK = timedelta(seconds=5)
_HTTPS_PORT = 443


@dataclass(frozen=True)
class ReadyzResult:
    """The answer to GET /readyz: ok (200 "ok"), the HTTP status when there
    was one, and one line for the journal ("/readyz ok", "/readyz not ok: 500")."""

    ok: bool
    status: Optional[int]
    detail: str


@dataclass(frozen=True)
class Verification:
    """What became of a restart: ok, the new process and certificate expiry
    seen, what never held (empty when ok), and one line for the journal."""

    ok: bool
    new_process: Optional[ApiserverProcess]
    new_not_after: Optional[datetime]
    missing: Tuple[str, ...]
    detail: str


# -- /readyz -------------------------------------------------------------------


def readyz(
    host: str,
    port: int,
    timeout: float,
    server_name: Optional[str] = None,
    ca_file: Optional[str] = None,
) -> ReadyzResult:
    """Given an address, a timeout in seconds, the TLS server name (default:
    the host) and a CA file (None: do not verify), return the apiserver's
    answer to GET /readyz.

    Connecting (to each address of the host in turn), the handshake and the
    response together take at most `timeout` (`agent.net`).
    Without ca_file the certificate is not checked: /readyz is public and we
    ask about health, not trust. With it, the chain and the name (or IP) must
    verify. Never raise for network or peer trouble: the result says what
    went wrong.
    """
    deadline = tls.Deadline(timeout)
    try:
        context = (
            trust.unverified_context() if ca_file is None else trust.client_context(ca_file=ca_file)
        )
    except trust.TlsSetupError as error:
        return ReadyzResult(
            False, None, f"/readyz not checked: cannot load CA file {ca_file}: {error.reason}"
        )
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    authority = f"[{address}]" if ":" in address else address
    try:
        with tls.connect(
            address, port, server_name=server_name, context=context, deadline=deadline
        ) as connection:
            response = http.exchange(
                connection,
                "GET",
                READYZ_PATH,
                host=f"{authority}:{port}",
                accept="text/plain",
                limit=http.HEALTH_LIMIT,
            )
    except tls.NetError as error:
        return _not_ok(None, str(error))
    status, body = response.status, response.body
    if status == 200 and body.strip() == b"ok":
        return ReadyzResult(True, 200, "/readyz ok")
    if status in (401, 403):
        # Anonymous access is off: normal on hardened clusters, but it hides readiness.
        return _not_ok(status, f"{status} (anonymous access refused)")
    if status == 200:
        return _not_ok(status, f"200 with body {body[:40]!r}")
    return _not_ok(status, str(status))


def readyz_url(url: str, timeout: float, ca_file: Optional[str] = None) -> ReadyzResult:
    """Given a peer as "https://HOST[:PORT]" (port 443 when absent), a timeout
    in seconds and a CA file (None: do not verify), return its answer to
    GET /readyz, as readyz() does. Raise ValueError for any other URL form."""
    host, port = peer_address(url)
    return readyz(host, port, timeout, ca_file=ca_file)


def peer_address(url: str) -> Tuple[str, int]:
    """Given "https://HOST[:PORT][/]", return (host, port); an IPv6 host comes
    without brackets. Raise ValueError for any other form."""
    parts = urlsplit(url)
    extra = parts.query or parts.fragment or parts.username is not None
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or extra:
        raise ValueError(f'{url!r} is not of the form "https://HOST:PORT"')
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a bad port") from None
    return parts.hostname, _HTTPS_PORT if port is None else port


def _not_ok(status: Optional[int], reason: str) -> ReadyzResult:
    return ReadyzResult(False, status, f"/readyz not ok: {reason}")


# -- the restart ---------------------------------------------------------------


def verify_restart(
    old_process: Optional[ApiserverProcess],
    old_cert: Optional[LoopbackCert],
    find: Optional[Callable[[], Optional[ApiserverProcess]]],
    probe_once: Callable[[], ProbeResult],
    ready: Callable[[], ReadyzResult],
    deadline: float,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 2.0,
    began: Optional[datetime] = None,
) -> Verification:
    """Given the process and certificate from before the restart (None:
    unknown), how to find the process, probe the certificate and ask /readyz,
    a deadline on the `monotonic` clock, and when the restart began (wall
    clock; None: unknown), return whether the restart shows.

    Every `interval` seconds it looks, until all three hold: (a) a process
    that is not the old one (another PID or start time; any, when the old one
    is unknown; not asked for when `find` is None, for targets watched without
    a process), (b) a certificate issued after the restart began: another
    certificate than the old one, with a later not_before, which puts its
    generation (not_before + 1 h) after `began` — its NotAfter may be earlier
    (a downgrade from v1.33 to v1.32 shortens the lifetime) — (c) /readyz ok.
    (a) and (b) count once seen, and the newest sighting is reported; (c) must
    hold in the last round. One round always runs, even past the deadline;
    each callable bounds its own time, so the last round may end that much
    after the deadline.
    """
    started = monotonic()
    new_process: Optional[ApiserverProcess] = None
    new_cert: Optional[LoopbackCert] = None
    while True:
        found = None if find is None else find()
        if found is not None and _is_new(found, old_process):
            new_process = found
        probed = probe_once()
        if probed.cert is not None and _issued_after(probed.cert, new_cert or old_cert, began):
            new_cert = probed.cert
        answer = ready()
        missing = _missing(
            old_cert, began, find is not None, found, probed, answer, new_process, new_cert
        )
        now = monotonic()
        new_not_after = None if new_cert is None else new_cert.not_after
        if not missing:
            pids = "" if find is None else f"{_pids(old_process, new_process)}, "
            old_not_after = None if old_cert is None else old_cert.not_after
            return Verification(
                True,
                new_process,
                new_not_after,
                (),
                f"restart succeeded: {pids}not_after {_date(old_not_after)} -> "
                f"{_date(new_not_after)}, /readyz ok (after {now - started:.0f}s)",
            )
        if now >= deadline:
            return Verification(
                False,
                new_process,
                new_not_after,
                missing,
                f"restart failed: {'; '.join(missing)} (checked for {now - started:.0f}s)",
            )
        sleep(min(interval, deadline - now))


def _is_new(found: ApiserverProcess, old: Optional[ApiserverProcess]) -> bool:
    return not same_process(found, old)


def _issued_after(
    cert: LoopbackCert, old: Optional[LoopbackCert], began: Optional[datetime]
) -> bool:
    """Given a served certificate, the one before (None: unknown) and when the
    restart began (None: unknown), return whether it was issued since."""
    if old is not None and (cert.sha256 == old.sha256 or cert.not_before <= old.not_before):
        return False
    return began is None or issued_since(cert, began)


def issued_since(cert: LoopbackCert, moment: datetime) -> bool:
    """Given a loopback certificate and a moment, return whether the apiserver
    generated it at or after that moment (its not_before is generation − 1 h),
    give or take a few seconds of clock disagreement."""
    return cert.not_before + BACKDATE >= moment - _CLOCK_SLACK


def _missing(
    old_cert: Optional[LoopbackCert],
    began: Optional[datetime],
    watching_process: bool,
    found: Optional[ApiserverProcess],
    probed: ProbeResult,
    answer: ReadyzResult,
    new_process: Optional[ApiserverProcess],
    new_cert: Optional[LoopbackCert],
) -> Tuple[str, ...]:
    """Given what was known before and what this round saw, return what does not hold yet."""
    missing: List[str] = []
    if watching_process and new_process is None:
        if found is None:
            missing.append("no new process (none found)")
        else:
            missing.append(f"no new process (PID {found.pid} unchanged)")
    if new_cert is None:
        cert = probed.cert
        if cert is None:
            missing.append(f"certificate not renewed (probe failed: {probed.error})")
        elif old_cert is not None and cert.sha256 == old_cert.sha256:
            missing.append(
                f"certificate not renewed (the same certificate, not_after {_date(cert.not_after)})"
            )
        else:
            since = (
                _date(began)
                if began is not None
                else f"not_before {_date(old_cert.not_before if old_cert else None)}"
            )
            missing.append(
                f"certificate not renewed (not_before {_date(cert.not_before)} says it was "
                f"issued before the restart began ({since}))"
            )
    if not answer.ok:
        missing.append(answer.detail)
    return tuple(missing)


def _pids(old: Optional[ApiserverProcess], new: Optional[ApiserverProcess]) -> str:
    return f"PID {'?' if old is None else old.pid} -> {'?' if new is None else new.pid}"


def _date(moment: Optional[datetime]) -> str:
    return rfc3339(moment) or "?"
