"""HTTPS requests to the API server named in a kubeconfig.

The kubeconfig's CA verifies the server (or the system CAs, when it names
none), its client certificate or bearer token authenticates us, and every
request is one connection (`Connection: close`) that runs against one
deadline: name resolution, connect, TLS handshake, request and response
together. `agent.lease` builds its Lease calls on this; what a status means is
the caller's business.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import queue
import socket
import ssl
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple, cast
from urllib.parse import urlsplit

import agent
from agent.kube.kubeconfig import ApiCredentials
from agent.text import one_line

__all__ = ["KubeApiClient", "KubeApiError", "printable"]

_MAX_RESPONSE = 1024 * 1024


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
        payload = json.dumps(body).encode() if body is not None else b""
        head = [
            f"{method} {self._prefix}{path} HTTP/1.1",
            f"Host: {self._netloc}",
            f"User-Agent: kube-loopback-guard/{agent.__version__}",
            "Accept: application/json",
            "Connection: close",
        ]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        if self.credentials.token is not None:
            head.append(f"Authorization: Bearer {self.credentials.token}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload
        raw = self._exchange(request, time.monotonic() + self.timeout)
        return _parse_response(raw, method, self.credentials.server)

    def _exchange(self, request: bytes, deadline: float) -> bytes:
        """Send one request and return the raw response, all before the deadline.

        Python's TLS calls apply a socket timeout to the whole call (handshake,
        one read), so setting it to the time left before each call bounds the
        sum; reading to EOF (Connection: close) avoids a buffered reader whose
        many small reads could each wait the full timeout.
        """
        server = self.credentials.server
        phase = "connect"
        sock: Optional[socket.socket] = None
        try:
            sock = _connect(self._host, self._port, deadline)
            phase = "TLS handshake"
            sock = self._context.wrap_socket(
                sock,
                server_hostname=self.credentials.tls_server_name or self._host,
                do_handshake_on_connect=False,
            )
            sock.settimeout(_remaining(deadline))
            sock.do_handshake()
            phase = "request"
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)
            phase = "response"
            received = bytearray()
            while True:
                sock.settimeout(_remaining(deadline))
                try:
                    chunk = sock.recv(64 * 1024)
                except ssl.SSLError:
                    if not received:
                        raise
                    break  # an EOF without close_notify; the parser judges completeness
                if not chunk:
                    return bytes(received)
                received += chunk
                if len(received) > _MAX_RESPONSE:
                    raise KubeApiError(f"{server}: the response exceeds {_MAX_RESPONSE} bytes")
            return bytes(received)
        except socket.timeout:
            raise KubeApiError(f"{server}: no answer within {self.timeout:g}s ({phase})") from None
        except ssl.SSLCertVerificationError as exc:
            raise KubeApiError(f"{server}: {_verify_hint(exc, self.credentials)}") from None
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc).lower().replace("_", " ")
            raise KubeApiError(f"{server}: {phase} failed: {reason}") from None
        except OSError as exc:
            raise KubeApiError(f"{server}: {phase} failed: {exc.strerror or exc}") from None
        finally:
            if sock is not None:
                sock.close()


def _parse_response(raw: bytes, method: str, server: str) -> Tuple[int, Dict[str, Any]]:
    """Parse a whole HTTP/1.1 response with http.client; return the status and
    the JSON object of the body ({} when it is not one)."""
    response = http.client.HTTPResponse(cast(socket.socket, _Received(raw)), method=method)
    try:
        response.begin()
        body = response.read()
    except (http.client.HTTPException, ValueError) as exc:
        detail = type(exc).__name__ if not str(exc) else printable(str(exc))
        raise KubeApiError(f"{server}: not a complete HTTP response ({detail})") from None
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:
        document = {"message": body[:200].decode("utf-8", "replace")}
    if not isinstance(document, dict):
        document = {}
    return response.status, document


class _Received:
    """Bytes already read, in the shape http.client.HTTPResponse reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def _tls_context(credentials: ApiCredentials) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The API server would pick h2 if offered; this client speaks HTTP/1.1.
    context.set_alpn_protocols(["http/1.1"])
    try:
        if credentials.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif credentials.ca_pem is not None:
            context.load_verify_locations(cadata=credentials.ca_pem.decode("ascii", "replace"))
        else:
            context.load_default_certs()
    except ssl.SSLError as exc:
        raise KubeApiError(
            f"{credentials.kubeconfig}: the certificate authority cannot be loaded: "
            f"{exc.reason or exc}"
        ) from None
    if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
        pem = credentials.client_cert_pem.rstrip(b"\n") + b"\n" + credentials.client_key_pem
        try:
            _load_client_pair(context, pem)
        except ssl.SSLError as exc:
            raise KubeApiError(
                f"{credentials.kubeconfig}: the client certificate and key cannot be loaded "
                f"(mismatched, or an encrypted key?): {exc.reason or exc}"
            ) from None
    return context


def _load_client_pair(context: ssl.SSLContext, pem: bytes) -> None:
    # OpenSSL reads a client key only from a file: an anonymous memory file
    # keeps it off every disk; else a private temporary file, removed at once.
    # An empty password makes an encrypted key fail instead of prompting.
    try:
        fd = os.memfd_create("kube-loopback-guard-client", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            with os.fdopen(fd, "wb", closefd=False) as memory:
                memory.write(pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}", password=b"")
            return
        except FileNotFoundError:
            pass  # no /proc: fall through to a temporary file
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="kube-loopback-guard-") as directory:
        path = os.path.join(directory, "client.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(pem)
        try:
            context.load_cert_chain(path, password=b"")
        finally:
            os.unlink(path)


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    last: Optional[OSError] = None
    for family, socktype, proto, _name, address in _resolve(host, port, deadline):
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(address)
            return sock
        except socket.timeout:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    assert last is not None
    raise last


def _resolve(host: str, port: int, deadline: float) -> List[Tuple[Any, ...]]:
    try:
        # IP literals, the usual server, never touch the resolver.
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    # getaddrinfo takes no timeout: ask in a thread and stop waiting at the
    # deadline (the thread ends when the resolver gives up).
    answers: queue.Queue[Any] = queue.Queue(maxsize=1)

    def ask() -> None:
        try:
            answers.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answers.put(exc)

    threading.Thread(target=ask, name="kubeapi-resolve", daemon=True).start()
    try:
        found = answers.get(timeout=_remaining(deadline))
    except queue.Empty:
        raise socket.timeout("name resolution") from None
    if isinstance(found, OSError):
        raise OSError(f"cannot resolve {host}: {found.strerror or found}")
    if not found:
        raise OSError(f"cannot resolve {host}: no address")
    return cast(List[Tuple[Any, ...]], found)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline passed")
    return left


def _verify_hint(exc: ssl.SSLCertVerificationError, credentials: ApiCredentials) -> str:
    detail = exc.verify_message or str(exc.reason)
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
