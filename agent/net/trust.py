"""Whom a TLS client trusts, as an `ssl.SSLContext` for `agent.net.tls.connect`.

`unverified_context()` reads any certificate and trusts none: the loopback
probe learns dates, and /readyz without a CA file asks about health, not
trust. `client_context()` checks the server's chain and name against a CA and
may present a client certificate: the API client, and peers' /readyz with a
CA file.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from typing import Optional

from agent.net.tls import ssl_reason

__all__ = ["TlsSetupError", "client_context", "unverified_context"]


class TlsSetupError(Exception):
    """A context that cannot be built: `what` could not be loaded ("certificate
    authority", "client certificate and key"), and `reason` is OpenSSL's."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"the {what} cannot be loaded: {reason}")
        self.what = what
        self.reason = reason


_unverified: Optional[ssl.SSLContext] = None
_unverified_lock = threading.Lock()


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An apiserver would pick h2 if offered; this client speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    return context


def unverified_context() -> ssl.SSLContext:
    """Return the context that reads any certificate and trusts none (built
    once per process: the daemon probes every few minutes for years)."""
    global _unverified
    with _unverified_lock:
        if _unverified is None:
            context = _base_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _unverified = context
        return _unverified


def client_context(
    *,
    verify: bool = True,
    ca_pem: Optional[bytes] = None,
    ca_file: Optional[str] = None,
    client_pem: Optional[bytes] = None,
) -> ssl.SSLContext:
    """Given whether to verify the server, a CA as PEM or a CA file (neither:
    the system's CAs) and a client certificate followed by its key as PEM
    (None: present none), return a context that verifies the server's chain
    and name (or, with verify=False, nothing) and authenticates with the
    client pair. Raise TlsSetupError if the CA or the client pair cannot be
    loaded (an encrypted key included)."""
    context = _base_context()
    try:
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_pem is not None:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        elif ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    except ssl.SSLError as exc:
        raise TlsSetupError("certificate authority", ssl_reason(exc)) from None
    except OSError as exc:
        raise TlsSetupError("certificate authority", exc.strerror or str(exc)) from None
    if client_pem is not None:
        try:
            _load_client_pair(context, client_pem)
        except (ssl.SSLError, OSError) as exc:
            reason = ssl_reason(exc) if isinstance(exc, ssl.SSLError) else str(exc.strerror)
            raise TlsSetupError("client certificate and key", reason) from None
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
