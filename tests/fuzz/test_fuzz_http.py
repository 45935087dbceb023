"""Fuzz: the HTTP responses the agent reads (status line, headers, bodies).

Every response the agent reads goes through `agent.net.http.exchange` (the
livez probe and /readyz with HEALTH_LIMIT, the Kubernetes API with
JSON_LIMIT). A scripted connection stands in for the TLS session (exchange
only calls send, recv and phase); it can keep sending after the script
ends, as a peer with an endless body does, and counts what it gave. A
second harness sends finite responses from a real TLS peer on 127.0.0.1
through the real `probe`, `readyz` and Kubernetes API client.

Properties: a Response or a NetError, never another exception; a
well-formed answer within the limit is read as sent (status and body); no
read takes more than a bounded number of bytes from a peer that never
stops; from a real peer, the verdicts follow the status and body, and the
API client answers or raises KubeApiError.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import pytest
from faulty_peers import TlsScriptedPeer
from fuzzing import PropertyBroken, inputs
from hypothesis import event, given
from hypothesis import strategies as st

from agent.kube.api import KubeApiClient, KubeApiError
from agent.kube.kubeconfig import ApiCredentials
from agent.net import http
from agent.net.tls import NetError
from agent.observe import probe as probe_module
from agent.observe.probe import livez_verdict
from agent.restart import verify

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# Far above the largest bound: JSON_LIMIT plus its framing allowance.
TAKEN_AT_MOST = 2 * 1024 * 1024


class ScriptedPeer:
    """A connection whose recv() gives the script in the given pieces, then
    either b"" (closed) or, for a peer that never stops, `endless` again and
    again."""

    def __init__(self, script: bytes, pieces: List[int], endless: bytes = b"") -> None:
        self._script = script
        self._pieces = pieces or [16 * 1024]
        self._endless = endless
        self.given = 0

    def send(self, data: bytes) -> None:
        pass

    def phase(self, name: str) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def recv(self, size: int = 16 * 1024) -> bytes:
        if self._script:
            piece = max(1, self._pieces[self.given % len(self._pieces)])
            data, self._script = self._script[: min(piece, size)], self._script[min(piece, size) :]
        elif self._endless:
            data = (self._endless * (size // len(self._endless) + 1))[:size]
        else:
            return b""
        self.given += len(data)
        if self.given > TAKEN_AT_MOST:
            raise PropertyBroken(
                f"the reader took {self.given} bytes from a peer that never stops",
            )
        return data


# -- responses -------------------------------------------------------------------

# (bytes, status, body, delimited); status and body are None for junk.
Case = Tuple[bytes, Optional[int], Optional[bytes], bool]

_STATUS = [200, 200, 200, 500, 404, 401, 403, 301, 999, 0]


def _chunked(body: bytes, sizes: List[int]) -> bytes:
    out, rest = b"", body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[:size], rest[size:]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    if rest:
        out += b"%x\r\n" % len(rest) + rest + b"\r\n"
    return out + b"0\r\n\r\n"


@st.composite
def well_formed(draw: st.DrawFn) -> Case:
    """A response any HTTP/1.1 client must read: (bytes, status, body, whether
    its length is known before the peer closes)."""
    status = draw(st.sampled_from(_STATUS[:-2]))
    body = draw(
        st.sampled_from([b"ok", b"ok\n", b"", b"[-]loopback failed", b"x" * 70000, b"[" * 5000])
    )
    headers = draw(
        st.lists(st.sampled_from([b"Content-Type: text/plain", b"X-A: b", b"Date: x"]), max_size=3)
    )
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        headers.append(
            draw(st.sampled_from([b"Transfer-Encoding: chunked", b"transfer-encoding:  Chunked"]))
        )
        payload = _chunked(body, draw(st.lists(st.integers(1, 9000), max_size=4)))
    else:
        payload = body
    head = b"HTTP/1.1 %d Reason\r\n" % status + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return head + payload, status, body, framing != "close"


_lines = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 500",
        b"HTTP/2 200",
        b"HTTP/1.1 2000 Big",
        b"HTTP/1.1 -1 Neg",
        b"HTTP/1.1 \xd9\xa2\xd9\xa0\xd9\xa0 Arabic digits",
        b"Content-Length: 2",
        b"Content-Length: -5",
        b"Content-Length: 99999999999999999999",
        b"Content-Length: \xd9\xa2",
        b"Transfer-Encoding: chunked",
        b" folded: header",
        b"FFFFFFFFFFFF",
        b"-1",
        b"0x10",
        b"5;ext=1",
        b"0",
        b"ok",
        b"",
    ]
)


@st.composite
def any_response(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(_lines, st.binary(max_size=20)), max_size=12))
    return b"\r\n".join(lines) + draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))


@st.composite
def chunk_streams(draw: st.DrawFn) -> Case:
    """A 200 chunked response whose first chunk announces some size, with
    (maybe) only part of it in the script: the endless peer sends the rest."""
    size = draw(
        st.sampled_from(
            [b"10", b"0", b"-1", b"FFFFFFFFFFFF", b"ffffffff;ext=1", b"7fffffffffffffff"]
        )
    )
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + size + b"\r\n" + draw(st.binary(max_size=40)), None, None, False


_endless = st.sampled_from([b"", b"", b"x", b"FFFF\r\n" + b"y" * 100, b"1\r\nz\r\n", b"a: b\r\n"])
_pieces = st.lists(st.integers(1, 20000), max_size=4)


def _exchange(peer: ScriptedPeer, limit: int) -> Optional[http.Response]:
    """The response as the agent reads it, or None for a NetError."""
    try:
        return http.exchange(
            peer,  # type: ignore[arg-type]
            "GET",
            "/livez?verbose",
            host="apiserver-loopback-client",
            accept="text/plain",
            limit=limit,
        )
    except NetError:
        return None


@inputs(2000)
@given(
    st.one_of(
        well_formed(), any_response().map(lambda raw: (raw, None, None, False)), chunk_streams()
    ),
    _endless,
    _pieces,
    st.sampled_from([http.HEALTH_LIMIT, http.JSON_LIMIT]),
)
def test_every_response_is_read_within_bounds(
    case: Case, endless: bytes, pieces: List[int], limit: int
) -> None:
    raw, status, body, delimited = case
    peer = ScriptedPeer(raw, pieces, endless)
    response = _exchange(peer, limit)
    event("Response" if response is not None else "NetError")
    if status is not None and body is not None and (delimited or not endless):
        if len(body) <= limit:
            assert response == http.Response(status, body), (response, status, body[:20])
        else:
            assert response is None


# -- through a real TLS peer --------------------------------------------------------


@pytest.fixture(scope="module")
def tls_peer() -> Iterator[TlsScriptedPeer]:
    with TlsScriptedPeer(b"") as peer:
        yield peer


def _api(port: int) -> Optional[int]:
    """The API client's status for GET /x from the peer, or None for KubeApiError."""
    credentials = ApiCredentials(
        kubeconfig="fuzz",
        context="fuzz",
        server=f"https://127.0.0.1:{port}",
        insecure=True,
        token="t",
    )
    try:
        return KubeApiClient(credentials, timeout=5.0).request("GET", "/x")[0]
    except KubeApiError:
        return None


@inputs(600)
@given(st.one_of(well_formed(), any_response().map(lambda raw: (raw, None, None, False))))
def test_responses_from_a_real_peer(tls_peer: TlsScriptedPeer, case: Case) -> None:
    raw, status, body, _ = case
    tls_peer.response = raw
    result = probe_module.probe("127.0.0.1", tls_peer.port, "apiserver-loopback-client", 5.0)
    assert result.cert is not None, result.error
    ready = verify.readyz("127.0.0.1", tls_peer.port, 5.0)
    if status is not None and body is not None:
        small = len(body) <= http.HEALTH_LIMIT
        assert result.livez == (livez_verdict(status, body) if small else "error")
        assert ready.ok == (small and status == 200 and body.strip() == b"ok")
    api = _api(tls_peer.port)
    assert status is None or api == status
