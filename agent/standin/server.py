"""A stand-in kube-apiserver: the loopback certificate trick, and nothing else.

It serves a loopback certificate built the way client-go's
`GenerateSelfSignedCertKey` builds kube-apiserver's (`agent.standin_certs`)
only to TLS clients that send SNI `apiserver-loopback-client` (every other
client gets a normal serving certificate), and answers the few health
endpoints the agent reads. The `demo` command and the test suite use it; it
needs nothing beyond the agent's own dependencies.

`python -m agent.standin --secure-port 6443` runs one as a process, which
accepts kube-apiserver's flags and generates a new pair at each start; started
through a symlink named kube-apiserver, it is an apiserver process to the agent.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Optional, Sequence, Union

from agent.config.durations import argument, parse_signed_duration, parse_utc_time
from agent.model import DEFAULT_SECURE_PORT, LOOPBACK_SERVER_NAME
from agent.standin.certs import make_loopback_pair, make_serving_pair, server_context

__all__ = ["LIVEZ_MODES", "READYZ_MODES", "StandinApiserver", "main"]

LIVEZ_MODES = ("auto", "ok", "failed", "absent", "forbidden")
READYZ_MODES = ("ok", "failed")
LIVEZ_CHECK_PATH = "/livez/loopback-serving-certificate"

_MAX_REQUEST_HEAD = 16 * 1024
# The probe never needs more; a misbehaving client must not pin a thread.
_DEFAULT_CLIENT_TIMEOUT = 5.0
_DEFAULT_MAX_CONNECTIONS = 16


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}

# Upstream's aggregate answer when a readiness check fails (etcd, for example).
_READYZ_FAILED_BODY = "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"

_FORBIDDEN_BODY = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    '"message":"forbidden: User \\"system:anonymous\\" cannot get path \\"%s\\"",'
    '"reason":"Forbidden","details":{},"code":403}\n'
)


class StandinApiserver:
    """A TLS server that behaves like kube-apiserver towards the agent's probe.

    Use it as a context manager (`with StandinApiserver(expires_in=...) as api:`)
    or call start() and close(). The loopback certificate's dates come from at
    most one of: `expires_in` (time left, may be negative for an expired
    certificate; 300 days when nothing is given), `not_after`, `generated_at`,
    or `not_yet_valid=True` (NotBefore one day ahead, as after a clock jump).
    `livez` picks the answer of GET /livez/loopback-serving-certificate: "ok",
    "failed" (500), "absent" (404, apiserver older than v1.36), "forbidden"
    (403, anonymous access off) or "auto" (ok until NotAfter, failed after, as
    v1.36+ does). `readyz` picks the answer of GET /readyz: "ok" or "failed"
    (500, as while etcd is unreachable). `ignore_sni=True` serves the ordinary
    certificate to every client, like a load balancer or a server that ignores
    SNI.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expires_in: Optional[timedelta] = None,
        not_after: Optional[datetime] = None,
        generated_at: Optional[datetime] = None,
        not_yet_valid: bool = False,
        lifetime: timedelta = timedelta(days=365),
        key_type: str = "rsa",
        ignore_sni: bool = False,
        livez: str = "auto",
        client_timeout: float = _DEFAULT_CLIENT_TIMEOUT,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
        now: Optional[datetime] = None,
        readyz: str = "ok",
    ) -> None:
        if livez not in LIVEZ_MODES:
            raise ValueError(f"livez must be one of {', '.join(LIVEZ_MODES)}, not {livez!r}")
        if readyz not in READYZ_MODES:
            raise ValueError(f"readyz must be one of {', '.join(READYZ_MODES)}, not {readyz!r}")
        given = [expires_in is not None, not_after is not None, generated_at is not None]
        if sum(given) + int(not_yet_valid) > 1:
            raise ValueError(
                "give at most one of expires_in, not_after, generated_at, not_yet_valid"
            )
        now = now if now is not None else datetime.now(timezone.utc)
        hour = timedelta(hours=1)
        if generated_at is None:
            if not_yet_valid:
                generated_at = now + timedelta(days=1) + hour
            else:
                if not_after is None:
                    remaining = expires_in if expires_in is not None else timedelta(days=300)
                    not_after = now + remaining
                generated_at = not_after - lifetime + hour

        self.host = host
        self.pair = make_loopback_pair(generated_at, lifetime, key_type)
        self.serving_pair = make_serving_pair(now, key_type)
        self.ignore_sni = ignore_sni
        self.livez = livez
        self.readyz = readyz
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

    def livez_verdict(self, now: Optional[datetime] = None) -> str:
        """Given the current time, return what the loopback livez check says now:
        "ok", "failed", "absent" or "forbidden".
        """
        if self.livez != "auto":
            return self.livez
        now = now if now is not None else datetime.now(timezone.utc)
        return "failed" if now >= self.pair.not_after else "ok"

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
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, "text/plain; charset=utf-8", "400 Bad Request", "GET")
        method, target, _version = parts
        with self._lock:
            self._requests.append(target)
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain; charset=utf-8", "method not allowed\n", method)
        path = target.split("?", 1)[0]
        status, content_type, body = self._route(path)
        return _response(status, content_type, body, method)

    def _route(self, path: str) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        verdict = self.livez_verdict()
        if verdict == "forbidden" and path.startswith(("/livez", "/healthz", "/readyz")):
            return 403, "application/json", _FORBIDDEN_BODY % path
        if path == LIVEZ_CHECK_PATH:
            if verdict == "ok":
                return 200, text, "ok"
            if verdict == "failed":
                # Upstream's per-check handler wraps the check error this way;
                # the error text itself is illustrative.
                return 500, text, "internal server error: loopback certificate expired\n"
            return 404, text, "404 page not found\n"
        if path in ("/livez", "/healthz"):
            if verdict == "failed":
                aggregate = (
                    "[+]ping ok\n"
                    "[-]loopback-serving-certificate failed: reason withheld\n"
                    f"{path.lstrip('/')} check failed\n"
                )
                return 500, text, aggregate
            return 200, text, "ok"
        if path == "/readyz":
            if self.readyz == "failed":
                return 500, text, _READYZ_FAILED_BODY
            return 200, text, "ok"
        return 404, text, "404 page not found\n"


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


def _response(status: int, content_type: str, body: str, method: str) -> bytes:
    payload = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if method == "HEAD" else head + payload


# -- a stand-in apiserver process ----------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an unknown kube-apiserver flag such as --bind must
    # never be taken for a prefix of one of ours.
    parser = argparse.ArgumentParser(
        prog="python -m agent.standin",
        description="Serve a stand-in kube-apiserver in the foreground until SIGTERM or "
        "SIGINT, with a loopback certificate generated at start, as upstream does. "
        "Other kube-apiserver flags are accepted and ignored.",
        allow_abbrev=False,
    )
    parser.add_argument("--secure-port", type=int, default=DEFAULT_SECURE_PORT)
    parser.add_argument(
        "--bind-address",
        default="127.0.0.1",
        help="default 127.0.0.1 (kube-apiserver's is 0.0.0.0; a stand-in stays local)",
    )
    parser.add_argument(
        "--lifetime",
        type=argument(parse_signed_duration),
        default=timedelta(days=365),
        help='default "365d"',
    )
    dates = parser.add_mutually_exclusive_group()
    dates.add_argument(
        "--expires-in", type=argument(parse_signed_duration), help='time left, e.g. "10d", "-3d"'
    )
    dates.add_argument("--not-after", type=argument(parse_utc_time), help="RFC 3339")
    dates.add_argument(
        "--generated-at",
        type=argument(parse_utc_time),
        help="RFC 3339; default: now, as at every upstream start",
    )
    parser.add_argument("--key-type", choices=("rsa", "ec"), default="rsa")
    parser.add_argument("--livez", choices=LIVEZ_MODES, default="auto")
    parser.add_argument("--readyz", choices=READYZ_MODES, default="ok")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Given kube-apiserver-like arguments (sys.argv[1:] when None), serve a
    stand-in apiserver until SIGTERM or SIGINT; return 0, or 1 when the
    address cannot be bound.

    Each start generates a new loopback pair (generated now unless a date
    option says otherwise), like a real apiserver start. Once listening it
    prints one line, "listening on HOST:PORT", to stdout. Arguments it does
    not know are ignored, so it can stand where kube-apiserver's command line
    is expected. argparse exits with 2 for a bad value of a known option.
    """
    parser = _parser()
    args, _ignored = parser.parse_known_args(argv)
    generated_at = args.generated_at
    if args.expires_in is None and args.not_after is None and generated_at is None:
        generated_at = datetime.now(timezone.utc)
    stop = {signal.SIGTERM, signal.SIGINT}
    # Blocked before any thread starts, so every thread inherits the mask and
    # sigwait below is the one place the signal arrives: no handler races.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        server = StandinApiserver(
            host=args.bind_address,
            port=args.secure_port,
            expires_in=args.expires_in,
            not_after=args.not_after,
            generated_at=generated_at,
            lifetime=args.lifetime,
            key_type=args.key_type,
            livez=args.livez,
            readyz=args.readyz,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        server.start()
    except OSError as error:
        sys.stderr.write(f"cannot listen on {args.bind_address}:{args.secure_port}: {error}\n")
        return 1
    try:
        host = f"[{server.host}]" if ":" in server.host else server.host
        sys.stdout.write(f"listening on {host}:{server.port}\n")
        sys.stdout.flush()
        signal.sigwait(stop)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
