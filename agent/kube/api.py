"""HTTPS requests to the API server named in a kubeconfig.

The kubeconfig's CA verifies the server (or the system CAs, when it names
none), its client certificate or bearer token authenticates us, and every
request is one connection over `agent.net` that runs against one deadline:
name resolution, connect, TLS handshake, request and response together.
`agent.kube.lease` builds its Lease calls on this; what a status means is the
caller's business.
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from agent.kube.kubeconfig import ApiCredentials
from agent.net import http, tls, trust
from agent.text import one_line

__all__ = ["KubeApiClient", "KubeApiError", "printable"]


class KubeApiError(Exception):
    """The API server could not be asked: the credentials cannot be loaded, no
    connection or TLS session, no answer in time, or not an HTTP response."""


class KubeApiClient:
    """HTTP/1.1 over verified TLS to the API server of a kubeconfig context;
    each request is one connection and one deadline."""

    def __init__(self, credentials: ApiCredentials, *, timeout: float = 10.0) -> None:
        """Given credentials and a per-request timeout in seconds, return a client.
        Raise KubeApiError if the CA, client certificate or key cannot be loaded."""
        if timeout <= 0:
            raise ValueError("the timeout must be positive")
        url = urlsplit(credentials.server)
        self.credentials = credentials
        self.timeout = timeout
        self._host = url.hostname or ""
        self._port = url.port or 443
        self._netloc = url.netloc
        self._prefix = url.path.rstrip("/")
        self._context = _tls_context(credentials)

    def __repr__(self) -> str:
        return f"KubeApiClient(server={self.credentials.server!r}, timeout={self.timeout!r})"

    def request(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None
    ) -> Tuple[int, Dict[str, Any]]:
        """Given a method, a path below the server's URL and a JSON body (or
        None), return the HTTP status and the JSON object answered ({} when
        the body is not one). Raise KubeApiError if there is no whole answer
        within the timeout."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = []
        if self.credentials.token is not None:
            headers.append(("Authorization", f"Bearer {self.credentials.token}"))
        server = self.credentials.server
        try:
            with tls.connect(
                self._host,
                self._port,
                server_name=self.credentials.tls_server_name or self._host,
                context=self._context,
                deadline=tls.Deadline(self.timeout),
            ) as connection:
                response = http.exchange(
                    connection,
                    method,
                    f"{self._prefix}{path}",
                    host=self._netloc,
                    accept="application/json",
                    limit=http.JSON_LIMIT,
                    headers=headers,
                    body=payload,
                )
        except tls.UntrustedPeer as exc:
            raise KubeApiError(f"{server}: {_verify_hint(exc, self.credentials)}") from None
        except tls.NetError as exc:
            raise KubeApiError(f"{server}: {exc}") from None
        try:
            document = json.loads(response.body.decode("utf-8"))
        except (ValueError, RecursionError):  # not JSON, or nested beyond the parser's stack
            document = {"message": response.body[:200].decode("utf-8", "replace")}
        if not isinstance(document, dict):
            document = {}
        return response.status, document


def _tls_context(credentials: ApiCredentials) -> ssl.SSLContext:
    client_pem = None
    if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
        client_pem = credentials.client_cert_pem.rstrip(b"\n") + b"\n" + credentials.client_key_pem
    try:
        return trust.client_context(
            verify=not credentials.insecure, ca_pem=credentials.ca_pem, client_pem=client_pem
        )
    except trust.TlsSetupError as exc:
        hint = ""
        if exc.what.startswith("client"):
            hint = " (mismatched, or an encrypted key?)"
        raise KubeApiError(
            f"{credentials.kubeconfig}: the {exc.what} cannot be loaded{hint}: {exc.reason}"
        ) from None


def _verify_hint(exc: tls.UntrustedPeer, credentials: ApiCredentials) -> str:
    detail = exc.verify_message
    if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
        hint = "the certificate is not for this host name; set tls-server-name in the kubeconfig"
    else:
        hint = (
            f"is certificate-authority(-data) in {credentials.kubeconfig} the CA of this "
            "cluster's API server?"
        )
    return f"TLS verification of the server failed: {detail}; {hint}"


def printable(text: str) -> str:
    """Given text from the server, return it safe to put in a message: one
    line, control characters escaped, at most 300 characters."""
    return one_line(text)
