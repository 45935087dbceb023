"""Ask an apiserver for its loopback certificate, as its own loopback client does.

One probe is one TCP connection (`agent.net`): a TLS handshake with SNI
`apiserver-loopback-client`, reading (not verifying) the leaf certificate, then,
on the same connection, `GET /livez?verbose`, whose check lines say what the
apiserver's own `loopback-serving-certificate` check thinks (v1.36+). Default
RBAC lets anyone read `/livez`, with or without a query, but not
`/livez/<check>`. The whole exchange runs against a single deadline, so a peer
that trickles one byte a second cannot stretch a probe past its timeout.
"""

from __future__ import annotations

from typing import Optional

from agent.model import LivezVerdict, LoopbackCert, ProbeResult
from agent.net import http, tls, trust
from agent.observe.certificate import read_loopback_cert

__all__ = ["LIVEZ_CHECK", "LIVEZ_PATH", "livez_verdict", "probe"]

LIVEZ_PATH = "/livez?verbose"
LIVEZ_CHECK = "loopback-serving-certificate"


def probe(
    host: str,
    port: int,
    server_name: str,
    timeout: float,
    *,
    check_livez: bool = True,
) -> ProbeResult:
    """Given an address, the SNI to send and a timeout in seconds, return what
    the peer served: its loopback certificate and livez verdict, or the reason
    there is none.

    Connecting, the handshake and the livez request together take at most
    `timeout` (a host name is resolved within it too). Never raise for
    network or peer trouble: the result carries cert=None and a short `error`
    instead. A livez problem leaves the certificate result standing.
    """
    if not 0 < port < 65536:
        return _result(host, port, server_name, None, "not-checked", f"invalid port {port}")
    deadline = tls.Deadline(timeout)
    try:
        connection = tls.connect(
            host,
            port,
            server_name=server_name,
            context=trust.unverified_context(),
            deadline=deadline,
        )
    except tls.NetError as exc:
        return _result(host, port, server_name, None, "not-checked", str(exc))
    with connection:
        der = connection.peer_certificate()
        if not der:
            return _result(
                host, port, server_name, None, "not-checked", "the peer sent no certificate"
            )
        try:
            cert = read_loopback_cert(der)
        except ValueError as exc:
            # NotLoopbackCert included: never report another certificate's dates.
            return _result(host, port, server_name, None, "not-checked", str(exc))
        livez: LivezVerdict = "not-checked"
        if check_livez:
            livez = _ask_livez(connection, server_name)
        return _result(host, port, server_name, cert, livez, None)


def livez_verdict(status: int, body: bytes) -> LivezVerdict:
    """Given the status and body of GET /livez?verbose, return what the
    apiserver's loopback-serving-certificate check says: "ok" or "failed" from
    its check line (HTTP 500 when any check fails), "absent" for a 200 or 500
    without that line (before v1.36), "forbidden" for 401/403 (anonymous
    access off), "error" for anything else."""
    if status in (401, 403):
        return "forbidden"
    if status not in (200, 500):
        return "error"
    for line in body.decode("latin-1").splitlines():
        line = line.strip()
        if line == f"[+]{LIVEZ_CHECK} ok":
            return "ok"
        if line.startswith(f"[-]{LIVEZ_CHECK} failed"):
            return "failed"
    return "absent"


def _ask_livez(connection: tls.TlsConnection, server_name: str) -> LivezVerdict:
    try:
        response = http.exchange(
            connection,
            "GET",
            LIVEZ_PATH,
            host=server_name,
            accept="text/plain",
            limit=http.HEALTH_LIMIT,
        )
    except tls.NetError:
        # Whatever went wrong here, the certificate was already read and stands.
        return "error"
    return livez_verdict(response.status, response.body)


def _result(
    host: str,
    port: int,
    server_name: str,
    cert: Optional[LoopbackCert],
    livez: LivezVerdict,
    error: Optional[str],
) -> ProbeResult:
    return ProbeResult(
        host=host, port=port, server_name=server_name, cert=cert, livez=livez, error=error
    )
