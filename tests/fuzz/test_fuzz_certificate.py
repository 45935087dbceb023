"""Fuzz: certificates a peer may serve → the probe → what the agent keeps.

Two harnesses. Arbitrary DER (valid certificates with bytes flipped, cut or
inserted, and plain noise) through `read_loopback_cert`: a LoopbackCert or a
ValueError, nothing else. Certificates with odd fields (no CN, several CNs,
strings that are not UTF-8 or hold line breaks, huge SAN lists, a duplicated
SAN extension, ECDSA/Ed25519/RSA keys, versions v1/v2/unknown, dates in
1950/2049/2050/9999 in either time form, not_before after not_after,
negative, zero and huge serials) served by a real TLS server on 127.0.0.1
and read by the real probe: a ProbeResult, never an exception; the same
reading as parsing the bytes directly; and the state the daemon would build
from it reads back equal from its file format.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from der import CN, CertSpec, NameValue, O, certificate, key_pem, pem, time_field
from fuzzing import PropertyBroken, inputs
from hypothesis import event, given
from hypothesis import strategies as st

from agent.model import (
    BACKDATE,
    LOOPBACK_SERVER_NAME,
    ApiserverProcess,
    LoopbackCert,
    ProbeResult,
    TargetFacts,
    TargetReport,
)
from agent.observe.certificate import read_loopback_cert
from agent.observe.probe import probe
from agent.state.codec import decode_state, encode_state
from agent.state.records import AgentState, target_state_from

# A peer's odd certificate makes cryptography warn (negative serial, overlong
# attribute); a warning is not a failure of the agent.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

KEYS = {
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
LOOPBACK_CN = b"apiserver-loopback-client@1767952693"


class ServingPeer:
    """A TLS server on 127.0.0.1 that serves whatever certificate it was last
    given, then answers any request with 404 (an apiserver before v1.36)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.context: Optional[ssl.SSLContext] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def serve(self, chain_pem: bytes, key: bytes) -> None:
        """Serve this chain from now on. Raise ssl.SSLError if OpenSSL refuses it."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as directory:
            cert_file, key_file = Path(directory) / "chain.pem", Path(directory) / "key.pem"
            cert_file.write_bytes(chain_pem)
            key_file.write_bytes(key)
            context.load_cert_chain(cert_file, key_file)
        self.context = context

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError, ValueError):
                conn.settimeout(2)
                assert self.context is not None
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(scope="module")
def peer() -> Iterator[ServingPeer]:
    server = ServingPeer()
    yield server
    server.close()


# -- odd certificates ----------------------------------------------------------

_served_strings: st.SearchStrategy[NameValue] = st.sampled_from(
    [
        (0x0C, LOOPBACK_CN),
        (0x13, LOOPBACK_CN),
        (0x0C, b"apiserver-loopback-client"),
        (0x0C, b"apiserver-loopback-client-ca@1767952693"),
        (0x0C, b""),
    ]
)
# OpenSSL will not serve some of these (text that is not UTF-8, a BMPString
# of odd length): those are parsed directly only.
_odd_strings: st.SearchStrategy[NameValue] = st.one_of(
    st.just((0x0C, b"apiserver-loopback-client@99999999999999999999")),
    st.just((0x0C, LOOPBACK_CN + b"\n")),
    st.just((0x0C, b"x\nWATCHDOG=trigger\n")),
    st.just((0x0C, b"\xff\xfe not UTF-8")),
    st.just((0x1E, "apiserver-loopback-client@1".encode("utf-16-be"))),
    st.just((0x1E, b"\x00")),  # a BMPString of odd length
    st.just((0x0C, b"a" * 5000)),
    st.tuples(st.sampled_from([0x0C, 0x13, 0x16, 0x14, 0x1E]), st.binary(max_size=40)),
)
_strings = st.one_of(_served_strings, _served_strings, _served_strings, _odd_strings)
_attributes = st.lists(st.tuples(st.sampled_from([CN, CN, O]), _strings), max_size=4)
_years = st.one_of(
    st.sampled_from([1950, 1999, 2000, 2026, 2027, 2049, 2050, 2106, 9999, 1]),
    st.integers(1, 9999),
)
_times = st.builds(
    time_field,
    _years,
    st.integers(1, 12),
    st.integers(1, 28),
    st.sampled_from(["utc", "generalized"]),
)
_serials = st.one_of(
    st.integers(1, 2**63 - 1),
    st.sampled_from([0, -1, -(2**63), 2**159, 2**160, 2**1000]),
    st.integers(-(2**200), 2**200),
)
_dns = st.one_of(
    st.just(b"apiserver-loopback-client"),
    st.binary(max_size=30),
    st.just(b"apiserver-loopback-client\n"),
)
_san_lists = st.one_of(
    st.lists(_dns, max_size=4),
    st.integers(100, 3000).map(
        lambda n: [b"n%d.example" % i for i in range(n)] + [b"apiserver-loopback-client"]
    ),
)


@st.composite
def odd_certificates(draw: st.DrawFn) -> Tuple[bytes, str]:
    key_name = draw(st.sampled_from(sorted(KEYS)))
    spec = CertSpec(
        key=KEYS[key_name],
        version=draw(st.sampled_from([2, 2, 2, 2, 2, 2, None, 0, 1, 3, 5, -1])),
        serial=draw(_serials),
        issuer=draw(_attributes),
        subject=draw(_attributes),
        not_before=draw(_times),
        not_after=draw(_times),
        dns_names=draw(_san_lists),
        san_twice=draw(st.integers(0, 9)) == 0,
    )
    return certificate(spec), key_name


def _read(der: bytes) -> Optional[LoopbackCert]:
    try:
        return read_loopback_cert(der)
    except ValueError:
        return None


def _one_line_each(result: ProbeResult) -> None:
    """What the peer sent, rendered as the plugin's status line and as STATUS=,
    must stay one line each: a line break there is a new sd_notify command."""
    from builders import target_config

    from agent.config.types import Thresholds
    from agent.judge.assess import assess
    from agent.model import CheckReport
    from agent.report.output import status_line, systemd_status

    thresholds = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
    now = datetime(2026, 12, 3, tzinfo=timezone.utc)
    facts = TargetFacts("kube-apiserver", None, None, result)
    item = TargetReport(target_config(), facts, assess(facts, thresholds, timedelta(days=365), now))
    report = CheckReport(now, thresholds, (item,))
    for line in (status_line(report), systemd_status(report)):
        if any(c in line for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise PropertyBroken(f"a line break from the peer in {line!r}")


def _state_round_trip(result: ProbeResult) -> None:
    """Build the state the daemon would from this probe (the process started
    an hour after not_before, so the lifetime is learned) and read it back."""
    from builders import target_config

    from agent.config.types import Thresholds
    from agent.judge.assess import assess

    cert = result.cert
    assert cert is not None
    try:
        started = cert.not_before + BACKDATE
    except OverflowError:
        return  # not_before in the last hour of year 9999: no process can start then
    process = ApiserverProcess(4242, "kube-apiserver", started, 6443, None)
    facts = TargetFacts("kube-apiserver", process, None, result)
    thresholds = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
    now = started + timedelta(days=1) if started.year < 9999 else started
    report = TargetReport(
        target_config(), facts, assess(facts, thresholds, timedelta(days=365), now)
    )
    state = AgentState({"kube-apiserver": target_state_from(report, None, checked_at=now)}, ())
    try:
        again = decode_state(encode_state(state))
    except ValueError as error:
        raise PropertyBroken(f"state from this certificate unreadable: {error}") from None
    if again != state:
        raise PropertyBroken("state from this certificate reads back different")


@inputs(2000)
@given(odd_certificates())
def test_odd_certificates_through_the_probe(peer: ServingPeer, case: Tuple[bytes, str]) -> None:
    der, key_name = case
    direct = _read(der)
    try:
        peer.serve(pem(der), key_pem(KEYS[key_name]))
    except ssl.SSLError:
        event("OpenSSL refuses to serve it; parsed directly only")
        return
    result = probe("127.0.0.1", peer.port, LOOPBACK_SERVER_NAME, 5.0)
    assert isinstance(result, ProbeResult)
    assert result.cert == direct
    _one_line_each(result)
    if result.cert is None:
        assert result.error
        event("probe: error")
        return
    event("probe: loopback certificate")
    assert result.cert.not_before.utcoffset() == timedelta(0)
    _state_round_trip(result)


def test_a_one_mebibyte_chain_is_an_error_not_a_hang(peer: ServingPeer) -> None:
    key = KEYS["p256"]
    leaf = certificate(
        CertSpec(
            key=key,
            subject=[(CN, (0x0C, LOOPBACK_CN))],
            not_before=time_field(2026, 1, 1, "utc"),
            not_after=time_field(2027, 1, 1, "utc"),
            dns_names=[b"apiserver-loopback-client"],
        )
    )
    filler = certificate(
        CertSpec(
            key=key,
            subject=[(O, (0x0C, b"f" * 60000))],
            not_before=time_field(2026, 1, 1, "utc"),
            not_after=time_field(2027, 1, 1, "utc"),
        )
    )
    chain: List[bytes] = [leaf] + [filler] * (1024 * 1024 // len(filler) + 1)
    assert sum(map(len, chain)) >= 1024 * 1024
    peer.serve(b"".join(map(pem, chain)), key_pem(key))
    started = time.monotonic()
    result = probe("127.0.0.1", peer.port, LOOPBACK_SERVER_NAME, 5.0)
    assert time.monotonic() - started < 6
    # OpenSSL's client takes at most 100 KiB of certificate list by default.
    assert result.cert is None and result.error, result


# -- arbitrary DER ---------------------------------------------------------------

_SEEDS = [
    certificate(
        CertSpec(
            key=KEYS["p256"],
            serial=12345,
            issuer=[(CN, (0x0C, b"apiserver-loopback-client-ca@1767952693"))],
            subject=[(CN, (0x0C, LOOPBACK_CN))],
            not_before=time_field(2026, 1, 9, "utc"),
            not_after=time_field(2027, 1, 9, "utc"),
            dns_names=[b"apiserver-loopback-client"],
        )
    ),
    certificate(
        CertSpec(
            key=KEYS["ed25519"],
            subject=[(CN, (0x0C, LOOPBACK_CN))],
            not_before=time_field(2050, 1, 1, "generalized"),
            not_after=time_field(9999, 12, 28, "generalized"),
        )
    ),
]


@st.composite
def mutated_der(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "set", "insert", "delete", "cut"]))
        byte = draw(st.integers(0, 255))
        if action == "set":
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        elif action == "delete":
            del data[position]
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


@inputs(5000)
@given(st.one_of(mutated_der(), mutated_der(), mutated_der(), st.binary(max_size=300)))
def test_any_der_is_a_certificate_or_a_value_error(der: bytes) -> None:
    try:
        cert = read_loopback_cert(der)
    except ValueError:
        event("ValueError")
        return
    event("read")
    assert cert.not_before.utcoffset() == timedelta(0)
    assert cert.not_after.utcoffset() == timedelta(0)
    assert "\n" not in cert.serial
