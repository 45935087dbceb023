"""Was the restart a success? A new process, a later certificate, /readyz ok.

readyz() asks an apiserver's GET /readyz over TLS under one deadline, trusting
nothing unless a CA file is given (for peers, with peer_ca). verify_restart()
polls, with the clock and the three observations passed in, until the restart
shows or its deadline passes, and says in one line what it saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from agent.model import ApiserverProcess, ProbeResult, same_process
from agent.net import http, tls, trust
from agent.report.output import rfc3339

__all__ = [
    "ReadyzResult",
    "Verification",
    "peer_address",
    "readyz",
    "readyz_url",
    "verify_restart",
]

READYZ_PATH = "/readyz"
# Earlier than any certificate: with no old expiry known, any certificate is new.
_NEVER = datetime.min.replace(tzinfo=timezone.utc)
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
    old_not_after: Optional[datetime],
    find: Optional[Callable[[], Optional[ApiserverProcess]]],
    probe_once: Callable[[], ProbeResult],
    ready: Callable[[], ReadyzResult],
    deadline: float,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 2.0,
) -> Verification:
    """Given the process and certificate expiry from before the restart (None:
    unknown), how to find the process, probe the certificate and ask /readyz,
    and a deadline on the `monotonic` clock, return whether the restart shows.

    Every `interval` seconds it looks, until all three hold: (a) a process
    that is not the old one (another PID or start time; any, when the old one
    is unknown; not asked for when `find` is None, for targets watched without
    a process), (b) a loopback certificate expiring strictly later than the
    old one (any, when unknown), (c) /readyz ok. (a) and (b) count once seen,
    and the newest sighting is reported; (c) must hold in the last round. One
    round always runs, even past the deadline; each callable bounds its own
    time, so the last round may end that much after the deadline.
    """
    started = monotonic()
    new_process: Optional[ApiserverProcess] = None
    new_not_after: Optional[datetime] = None
    while True:
        found = None if find is None else find()
        if found is not None and _is_new(found, old_process):
            new_process = found
        probed = probe_once()
        served = None if probed.cert is None else probed.cert.not_after
        if served is not None and served > (new_not_after or old_not_after or _NEVER):
            new_not_after = served
        answer = ready()
        missing = _missing(
            old_not_after, find is not None, found, probed, answer, new_process, new_not_after
        )
        now = monotonic()
        if not missing:
            pids = "" if find is None else f"{_pids(old_process, new_process)}, "
            return Verification(
                True,
                new_process,
                new_not_after,
                (),
                f"restart succeeded: {pids}not_after {_date(old_not_after)} → "
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


def _missing(
    old_not_after: Optional[datetime],
    watching_process: bool,
    found: Optional[ApiserverProcess],
    probed: ProbeResult,
    answer: ReadyzResult,
    new_process: Optional[ApiserverProcess],
    new_not_after: Optional[datetime],
) -> Tuple[str, ...]:
    """Given what was known before and what this round saw, return what does not hold yet."""
    missing: List[str] = []
    if watching_process and new_process is None:
        if found is None:
            missing.append("no new process (none found)")
        else:
            missing.append(f"no new process (PID {found.pid} unchanged)")
    if new_not_after is None:
        if probed.cert is None:
            missing.append(f"certificate not renewed (probe failed: {probed.error})")
        elif old_not_after is not None and probed.cert.not_after == old_not_after:
            missing.append(f"certificate not renewed (not_after unchanged {_date(old_not_after)})")
        else:
            missing.append(
                f"certificate not renewed (not_after {_date(probed.cert.not_after)} "
                f"is before {_date(old_not_after)})"
            )
    if not answer.ok:
        missing.append(answer.detail)
    return tuple(missing)


def _pids(old: Optional[ApiserverProcess], new: Optional[ApiserverProcess]) -> str:
    return f"PID {'?' if old is None else old.pid} → {'?' if new is None else new.pid}"


def _date(moment: Optional[datetime]) -> str:
    return rfc3339(moment) or "?"
