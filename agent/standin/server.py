"""A stand-in kube-apiserver: the loopback certificate trick, and nothing else.

It serves a loopback certificate built the way client-go's
`GenerateSelfSignedCertKey` builds kube-apiserver's (`agent.standin.certs`)
only to TLS clients that send SNI `apiserver-loopback-client` (every other
client gets a normal serving certificate), and answers the health endpoints
as default RBAC lets an unauthenticated client see them: `/livez`, `/readyz`,
`/healthz` and `/version` (GET only, any query) are public, every other path
is 403, and with `--anonymous-auth=false` everything is 401. The `demo`
command and the test suite use it; it needs nothing beyond the agent's own
dependencies.
`python -m agent.standin` runs one as a process (`agent.standin.process`).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Optional, Union

from agent.model import LOOPBACK_SERVER_NAME
from agent.standin.answers import LOOPBACK_CHECK, answer
from agent.standin.certs import make_loopback_pair, make_serving_pair, server_context

__all__ = ["LIVEZ_MODES", "LOOPBACK_CHECK", "READYZ_MODES", "StandinApiserver"]

# "auto": a v1.36+ apiserver, whose loopback-serving-certificate check fails
# once start + lifetime has passed; "ok", "failed": that check forced;
# "pre-1.36": an apiserver without the check.
LIVEZ_MODES = ("auto", "ok", "failed", "pre-1.36")
READYZ_MODES = ("ok", "failed")

_MAX_REQUEST_HEAD = 16 * 1024
# The probe never needs more; a misbehaving client must not pin a thread.
_DEFAULT_CLIENT_TIMEOUT = 5.0
_DEFAULT_MAX_CONNECTIONS = 16


class StandinApiserver:
    """A TLS server that behaves like kube-apiserver towards the agent's probe.

    Use it as a context manager (`with StandinApiserver(expires_in=...) as api:`)
    or call start() and close(). The loopback certificate's dates come from at
    most one of: `expires_in` (time left, may be negative for an expired
    certificate; 300 days when nothing is given), `not_after`, `started_at`
    (the apiserver's start: NotBefore is one hour earlier), or
    `not_yet_valid=True` (NotBefore one day ahead, as after a clock jump).
    `livez` picks the loopback-serving-certificate check among /livez and
    /healthz checks: "auto" (as v1.36+: ok until start + lifetime, an hour
    after NotAfter, failed after), "ok", "failed", or "pre-1.36" (no such
    check). `readyz` picks the answer of GET /readyz: "ok" or "failed" (500,
    as while etcd is unreachable). `anonymous_auth=False` answers 401 to every
    request, as kube-apiserver `--anonymous-auth=false` does to a client
    without credentials. `ignore_sni=True` serves the ordinary certificate to
    every client, like a load balancer or a server that ignores SNI.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expires_in: Optional[timedelta] = None,
        not_after: Optional[datetime] = None,
        started_at: Optional[datetime] = None,
        not_yet_valid: bool = False,
        lifetime: timedelta = timedelta(days=365),
        key_type: str = "rsa",
        ignore_sni: bool = False,
        livez: str = "auto",
        client_timeout: float = _DEFAULT_CLIENT_TIMEOUT,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
        now: Optional[datetime] = None,
        readyz: str = "ok",
        anonymous_auth: bool = True,
    ) -> None:
        if livez not in LIVEZ_MODES:
            raise ValueError(f"livez must be one of {', '.join(LIVEZ_MODES)}, not {livez!r}")
        if readyz not in READYZ_MODES:
            raise ValueError(f"readyz must be one of {', '.join(READYZ_MODES)}, not {readyz!r}")
        given = [expires_in is not None, not_after is not None, started_at is not None]
        if sum(given) + int(not_yet_valid) > 1:
            raise ValueError("give at most one of expires_in, not_after, started_at, not_yet_valid")
        now = now if now is not None else datetime.now(timezone.utc)
        hour = timedelta(hours=1)
        if started_at is None:
            if not_yet_valid:
                started_at = now + timedelta(days=1) + hour
            else:
                if not_after is None:
                    remaining = expires_in if expires_in is not None else timedelta(days=300)
                    not_after = now + remaining
                started_at = not_after - lifetime + hour

        self.host = host
        self.pair = make_loopback_pair(started_at, lifetime, key_type)
        self.serving_pair = make_serving_pair(now, key_type)
        self.ignore_sni = ignore_sni
        self.livez = livez
        self.readyz = readyz
        self.anonymous_auth = anonymous_auth
        self._requested_port = port
        self._client_timeout = client_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._loopback_context = server_context(self.pair)
        self._context = server_context(self.serving_pair)
        self._context.sni_callback = self._choose_certificate

        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._wakeup: Optional[tuple[socket.socket, socket.socket]] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._workers: set[threading.Thread] = set()
        self._open: set[ssl.SSLSocket] = set()
        self._closed = False
        self._connections = 0
        self._handshakes = 0
        self._loopback_handshakes = 0
        self._requests: list[str] = []
        self._server_names: list[Optional[str]] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> StandinApiserver:
        """Given a fresh server, bind, listen and start accepting; return self.

        Calling it again while running does nothing. Raise RuntimeError after
        close(), OSError if the address cannot be bound.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the stand-in apiserver is closed")
            if self._listener is not None:
                return self
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.host, self._requested_port))
                listener.listen(64)
                listener.setblocking(False)
            except OSError:
                listener.close()
                raise
            self._listener = listener
            self._wakeup = socket.socketpair()
            self._accept_thread = threading.Thread(
                target=self._accept_loop,
                args=(listener, self._wakeup[0]),
                name=f"standin-apiserver-{self.port}",
                daemon=True,
            )
            self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, cut open connections and wait briefly for the threads.

        Calling it again does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            wakeup = self._wakeup
            accept_thread = self._accept_thread
            for tls in self._open:
                # The plain socket's shutdown, not SSLSocket's: that one drops
                # the TLS object under a worker that may still be using it.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(tls, socket.SHUT_RDWR)
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup[1].send(b"x")
        if accept_thread is not None:
            accept_thread.join(timeout=5)
        with self._lock:
            workers = list(self._workers)
        deadline = time.monotonic() + 2
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        if wakeup is not None:
            wakeup[0].close()
            wakeup[1].close()

    def __enter__(self) -> StandinApiserver:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- what tests and the demo read ---------------------------------------

    @property
    def port(self) -> int:
        """The TCP port listened on. Raise RuntimeError before start()."""
        if self._listener is None:
            raise RuntimeError("the stand-in apiserver is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted."""
        with self._lock:
            return self._connections

    @property
    def handshakes(self) -> int:
        """How many TLS handshakes completed."""
        with self._lock:
            return self._handshakes

    @property
    def loopback_handshakes(self) -> int:
        """How many completed handshakes were served the loopback certificate."""
        with self._lock:
            return self._loopback_handshakes

    @property
    def requests(self) -> list[str]:
        """The request targets served, in order (for example "/livez")."""
        with self._lock:
            return list(self._requests)

    @property
    def server_names(self) -> list[Optional[str]]:
        """The SNI names clients sent (None when they sent none), in order."""
        with self._lock:
            return list(self._server_names)

    def loopback_check(self, now: Optional[datetime] = None) -> Optional[bool]:
        """Given the current time, return whether the loopback-serving-certificate
        check passes now (None: this apiserver has no such check).

        Upstream's check fails once its deadline, start + lifetime, has
        passed: an hour after NotAfter, since NotBefore is start - 1 h.
        """
        if self.livez == "pre-1.36":
            return None
        if self.livez != "auto":
            return self.livez == "ok"
        now = now if now is not None else datetime.now(timezone.utc)
        return now < self.pair.started_at + self.pair.lifetime

    # -- serving -----------------------------------------------------------

    def _choose_certificate(
        self,
        tls: Union[ssl.SSLObject, ssl.SSLSocket],
        server_name: Optional[str],
        _: ssl.SSLContext,
    ) -> None:
        with self._lock:
            self._server_names.append(server_name)
        if server_name == LOOPBACK_SERVER_NAME and not self.ignore_sni:
            tls.context = self._loopback_context

    def _accept_loop(self, listener: socket.socket, wakeup: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wakeup, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj is wakeup for key, _ in events):
                    return
                try:
                    conn, _addr = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    # Out of descriptors or similar: back off instead of spinning.
                    time.sleep(0.05)
                    continue
                if not self._slots.acquire(blocking=False):
                    conn.close()
                    continue
                with self._lock:
                    if self._closed:
                        conn.close()
                        self._slots.release()
                        return
                    self._connections += 1
                    worker = threading.Thread(
                        target=self._serve, args=(conn,), name="standin-conn", daemon=True
                    )
                    self._workers.add(worker)
                worker.start()

    def _serve(self, conn: socket.socket) -> None:
        tls: Optional[ssl.SSLSocket] = None
        try:
            conn.settimeout(self._client_timeout)
            tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            with self._lock:
                if self._closed:
                    return
                self._open.add(tls)
            tls.do_handshake()
            with self._lock:
                self._handshakes += 1
                if tls.context is self._loopback_context:
                    self._loopback_handshakes += 1
            head = _read_head(tls, time.monotonic() + self._client_timeout)
            if head is not None:
                tls.sendall(self._respond(head))
        except (OSError, ValueError):
            # Clients that hang up, time out or speak garbage are the point of
            # several tests; the server just moves on.
            pass
        finally:
            with self._lock:
                if tls is not None:
                    self._open.discard(tls)
                self._workers.discard(threading.current_thread())
            (tls if tls is not None else conn).close()
            self._slots.release()

    def _respond(self, head: bytes) -> bytes:
        target, response = answer(
            head,
            anonymous_auth=self.anonymous_auth,
            loopback_check=self.loopback_check(),
            ready=self.readyz == "ok",
        )
        if target is not None:
            with self._lock:
                self._requests.append(target)
        return response


def _read_head(tls: ssl.SSLSocket, deadline: float) -> Optional[bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_REQUEST_HEAD or time.monotonic() > deadline:
            return None
        chunk = tls.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    return buffer.split(b"\r\n\r\n", 1)[0]
