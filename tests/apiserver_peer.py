"""A stand-in Kubernetes API server for the Lease calls, on 127.0.0.1 or ::1.

It serves HTTPS with its own CA, authenticates by client certificate (issued by
its client CA) or bearer token, and implements GET/POST/PUT on
`/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` over an
in-memory store, the way kube-apiserver does: a resourceVersion that only
grows, 409 AlreadyExists on creating an existing Lease, 409 Conflict on an
update with a stale resourceVersion, 404 NotFound, 401 and 403, all as real
`Status` objects. `GET /readyz` answers "ok" without credentials.

One difference: kube-apiserver asks for a client certificate without requiring
a trusted one and answers 401 to an untrusted one; Python's TLS server cannot
do that, so here an untrusted certificate fails the TLS session instead.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Type

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.standin.certs import LoopbackPair, make_serving_pair, server_context

GROUP = "coordination.k8s.io"
_LEASES = re.compile(
    r"/apis/coordination\.k8s\.io/v1/namespaces/([a-z0-9][a-z0-9-]*)/leases(?:/([^/?]+))?"
)
_MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key, as PEM."""

    cert_pem: bytes
    key_pem: bytes


class ClientCa:
    """A CA that issues client certificates (`CN` = user, `O` = groups)."""

    def __init__(self, common_name: str = "kubernetes") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, user: str, groups: Tuple[str, ...] = ()) -> ClientCert:
        """Given a user name and groups, return a client certificate for them."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return ClientCert(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )


def status_body(code: int, reason: str, message: str, **details: str) -> Dict[str, Any]:
    """Return a Kubernetes `Status` object as kube-apiserver sends it."""
    body: Dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


class ApiserverPeer:
    """The stand-in; use as a context manager.

    `tokens` maps bearer tokens to user names; client certificates from
    `client_ca` authenticate as their CN. `anonymous=False` answers /readyz
    with 401 to requests without credentials (`--anonymous-auth=false`). `deny` maps a user to the verbs
    (get, create, update) it is forbidden. `chunked=True` sends bodies with
    chunked transfer encoding, as Go does for larger responses.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tokens: Optional[Mapping[str, str]] = None,
        deny: Optional[Mapping[str, FrozenSet[str]]] = None,
        chunked: bool = False,
        anonymous: bool = True,
    ) -> None:
        self.serving: LoopbackPair = make_serving_pair(datetime.now(timezone.utc), "ec")
        self.client_ca = ClientCa()
        self.tokens = dict(tokens or {})
        self.deny = dict(deny or {})
        self.chunked = chunked
        # False: --anonymous-auth=false, /readyz answers 401 without credentials.
        self.anonymous = anonymous
        self.lock = threading.Lock()
        self.leases: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.log: List[Tuple[str, str, int, Optional[str]]] = []  # method, path, status, user
        self._version = 1000
        context = server_context(self.serving)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=self.client_ca.ca_pem.decode("ascii"))
        self._server = _Server((host, 0), context, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_name, self._server.server_port
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def __enter__(self) -> ApiserverPeer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- what tests use ----------------------------------------------------------

    def kubeconfig(
        self,
        directory: Path,
        *,
        user: str = "kube-loopback-guard",
        token: Optional[str] = None,
        ca_pem: Optional[bytes] = None,
        server: Optional[str] = None,
        tls_server_name: Optional[str] = None,
    ) -> Path:
        """Write a kubeadm-shaped kubeconfig for this server and return its path:
        a client certificate for `user`, or `token` when given; the server's CA
        unless `ca_pem` says otherwise."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        cluster = [f"    certificate-authority-data: {b64(ca_pem or self.serving.ca_pem)}"]
        cluster.append(f"    server: {server or self.url}")
        if tls_server_name:
            cluster.append(f"    tls-server-name: {tls_server_name}")
        if token is not None:
            credentials = [f"    token: {token}"]
        else:
            pair = self.client_ca.issue(user)
            credentials = [
                f"    client-certificate-data: {b64(pair.cert_pem)}",
                f"    client-key-data: {b64(pair.key_pem)}",
            ]
        lines = [
            "apiVersion: v1",
            "clusters:",
            "- cluster:",
            *cluster,
            "  name: kubernetes",
            "contexts:",
            "- context:",
            "    cluster: kubernetes",
            f"    user: {user}",
            f"  name: {user}@kubernetes",
            f"current-context: {user}@kubernetes",
            "kind: Config",
            "preferences: {}",
            "users:",
            f"- name: {user}",
            "  user:",
            *credentials,
        ]
        path = directory / f"{user}-{len(list(directory.iterdir()))}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def put_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> Dict[str, Any]:
        """Store a Lease directly (as another client would have), return it."""
        with self.lock:
            body = {"metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
            return self._store(namespace, name, body, created=True)

    def lease(self, namespace: str, name: str) -> Optional[Dict[str, Any]]:
        """Return the stored Lease, or None."""
        with self.lock:
            found = self.leases.get((namespace, name))
            return json.loads(json.dumps(found)) if found is not None else None

    def delete_lease(self, namespace: str, name: str) -> None:
        with self.lock:
            self.leases.pop((namespace, name), None)

    def statuses(self, method: str) -> List[int]:
        """Return the HTTP statuses answered to `method` requests, in order."""
        with self.lock:
            return [status for m, _path, status, _user in self.log if m == method]

    # -- what the handler calls ------------------------------------------------

    def _store(
        self, namespace: str, name: str, body: Dict[str, Any], *, created: bool
    ) -> Dict[str, Any]:
        self._version += 1
        metadata = dict(body.get("metadata") or {})
        if created:
            metadata["uid"] = f"00000000-0000-4000-8000-{self._version:012d}"
            metadata["creationTimestamp"] = datetime.now(timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        else:
            old = self.leases[(namespace, name)]["metadata"]
            metadata.update(uid=old["uid"], creationTimestamp=old["creationTimestamp"])
        metadata.update(name=name, namespace=namespace, resourceVersion=str(self._version))
        stored = {
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": metadata,
            "spec": dict(body.get("spec") or {}),
        }
        self.leases[(namespace, name)] = stored
        return stored

    def handle(
        self, method: str, path: str, user: Optional[str], body: Optional[Any]
    ) -> Tuple[int, Dict[str, Any]]:
        # As kube-apiserver: authentication first, then routing.
        if user is None:
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        match = _LEASES.fullmatch(path)
        if match is None:
            return 404, status_body(
                404, "NotFound", "the server could not find the requested resource"
            )
        namespace, name = match.group(1), match.group(2)
        verb = {"GET": "get", "POST": "create", "PUT": "update"}.get(method)
        # Only a named Lease can be read or updated, only the collection created.
        if verb is None or (verb == "create") != (name is None):
            return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported here")
        if verb in self.deny.get(user, frozenset()):
            target = (
                f'leases.coordination.k8s.io "{name}"' if name else "leases.coordination.k8s.io"
            )
            message = (
                f'{target} is forbidden: User "{user}" cannot {verb} resource "leases" '
                f'in API group "{GROUP}" in the namespace "{namespace}"'
            )
            return 403, status_body(403, "Forbidden", message, group=GROUP, kind="leases")
        with self.lock:
            if verb == "get":
                assert name is not None
                return self._get(namespace, name)
            invalid = _invalid(body)
            if invalid:
                return 400, status_body(400, "BadRequest", invalid)
            assert isinstance(body, dict)
            if verb == "create":
                return self._create(namespace, body)
            assert name is not None
            return self._update(namespace, name, body)

    def _get(self, namespace: str, name: str) -> Tuple[int, Dict[str, Any]]:
        found = self.leases.get((namespace, name))
        if found is None:
            return 404, _not_found(name)
        return 200, found

    def _create(self, namespace: str, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        metadata = body.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            return 400, status_body(400, "BadRequest", "metadata.name: Required value")
        if metadata.get("resourceVersion"):
            # What kube-apiserver answers, odd as the code is.
            return 500, status_body(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        if (namespace, name) in self.leases:
            message = f'leases.coordination.k8s.io "{name}" already exists'
            return 409, status_body(409, "AlreadyExists", message, name=name, group=GROUP)
        return 201, self._store(namespace, name, body, created=True)

    def _update(
        self, namespace: str, name: str, body: Dict[str, Any]
    ) -> Tuple[int, Dict[str, Any]]:
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name:
            return 400, status_body(400, "BadRequest", "the name of the object does not match")
        found = self.leases.get((namespace, name))
        if found is None:
            return 404, _not_found(name)
        if metadata.get("resourceVersion") != found["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the '
                "object has been modified; please apply your changes to the latest version "
                "and try again"
            )
            return 409, status_body(409, "Conflict", message, name=name, group=GROUP)
        return 200, self._store(namespace, name, body, created=False)


def _not_found(name: str) -> Dict[str, Any]:
    message = f'leases.coordination.k8s.io "{name}" not found'
    return status_body(404, "NotFound", message, name=name, group=GROUP, kind="leases")


def _invalid(body: Any) -> str:
    """Return why a Lease body would be rejected, or "" (times must be MicroTime)."""
    if not isinstance(body, dict) or body.get("kind") != "Lease":
        return "the body is not a Lease"
    spec = body.get("spec") or {}
    for key in ("acquireTime", "renewTime"):
        if key in spec and not _MICRO_TIME.fullmatch(str(spec[key])):
            return f"spec.{key}: not a MicroTime: {spec[key]!r}"
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return "spec.leaseDurationSeconds: must be greater than 0"
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: Tuple[str, int], context: ssl.SSLContext, peer: ApiserverPeer
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.context = context
        self.peer = peer
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's version looks up the host's FQDN, slow where DNS is absent.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's thread, so one silent
        # client cannot hold up the others.
        request.settimeout(5)
        # As Go's net package does by default; without it, headers and body
        # written apart meet the client's delayed ACK (40 ms a request).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError, ValueError):
                tls.unwrap()
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self, method: str) -> None:
        peer = self.server.peer
        if method == "GET" and self.path == "/readyz":
            user = self._user()
            with peer.lock:
                peer.log.append((method, self.path, 200 if user or peer.anonymous else 401, user))
            if user is None and not peer.anonymous:
                body = json.dumps(status_body(401, "Unauthorized", "Unauthorized")).encode()
                self._send(401, body, "application/json")
            else:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        body: Any = None
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                body = "not JSON"
        user = self._user()
        status, document = peer.handle(method, self.path, user, body)
        with peer.lock:
            peer.log.append((method, self.path, status, user))
        self._send(status, json.dumps(document).encode(), "application/json")

    def _user(self) -> Optional[str]:
        peer = self.server.peer
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:
            subject: Any = cert.get("subject", ())
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
        authorization = self.headers.get("Authorization") or ""
        if authorization.startswith("Bearer "):
            return peer.tokens.get(authorization[len("Bearer ") :])
        return None

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if self.server.peer.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            middle = len(body) // 2
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(part), part)
                for part in (body[:middle], body[middle:])
                if part
            )
            payload = chunks + b"0\r\n\r\n"
        else:
            self.send_header("Content-Length", str(len(body)))
            payload = body
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True
