"""Text from outside stays one bounded line (agent.text), and a hostile peer
on 127.0.0.1 can neither inject sd_notify assignments, forge plugin or journal
lines (issue 9.4), nor crash the check with a certificate cryptography cannot
read (issue 9.5)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest
from agent_run import run_agent
from conftest import StandinFactory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faulty_peers import TlsPeer

from agent.observe.certificate import read_loopback_cert
from agent.observe.probe import probe
from agent.text import MAX_OUTSIDE_TEXT, one_line

ROOT = Path(__file__).resolve().parent.parent
INJECTION = "x\nWATCHDOG=trigger\nSTATUS=all fine\r\x1b[2J\u2028"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, ünïcödé ✓", "plain text, ünïcödé ✓"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x1b\x7f\x85", "\\x00\\x1b\\x7f\\x85"),
        ("\u2028\u2029\u202e\ufeff", "\\u2028\\u2029\\u202e\\ufeff"),
        ("\udcff", "\\udcff"),
        ("\U000e0041", "\\U000e0041"),
        (42, "42"),
    ],
)
def test_one_line(text: object, expected: str) -> None:
    assert one_line(text) == expected


def test_one_line_bounds_length() -> None:
    assert one_line("a" * 10_000) == "a" * MAX_OUTSIDE_TEXT + "…"
    assert one_line("a" * 10_000, limit=None) == "a" * 10_000
    assert "\n" not in one_line("\n" * 10_000)


# --- a hostile peer -------------------------------------------------------------


def _hostile_pem(tmp_path: Path, subject: str, *, version: Optional[int] = None) -> Path:
    """Write a self-signed certificate with the given CN (and, when asked, the
    X.509 version field patched to `version`) and its key; return the PEM path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    if version is not None:
        # [0] EXPLICIT INTEGER 2 (v3) → the version asked for; the signature
        # no longer matches, which a probe that trusts nothing never checks.
        marker = bytes.fromhex("a003020102")
        assert der.count(marker) == 1
        der = der.replace(marker, bytes.fromhex("a0030201") + bytes([version]))
    path = tmp_path / f"hostile-{os.urandom(4).hex()}.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(ssl.DER_cert_to_PEM_cert(der).encode() + key_pem)
    return path


class HostilePeer(TlsPeer):
    """A TLS server on 127.0.0.1 serving the given certificate for any SNI."""

    def __init__(self, pem: Path) -> None:
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pem))
        self._context = context

    def after_handshake(self, tls: ssl.SSLSocket) -> None:
        self.read_request(tls)
        tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


def _target(index: int, port: int) -> str:
    return (
        f'[[targets]]\nname = "api{index}"\nprocess_name = ""\nhost = "127.0.0.1"\n'
        f'port = {port}\ntimeout = "2s"\n'
    )


def _config(tmp_path: Path, *ports: int, metrics: str = "") -> Path:
    path = tmp_path / "config.toml"
    text = f'interval = "1m"\nstate_dir = "{tmp_path}/state"\n'
    targets = "".join(_target(i, port) for i, port in enumerate(ports))
    path.write_text(text + targets + f'[metrics]\ntextfile = "{metrics}"\n')
    return path


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=str(ROOT),
    )


def test_a_subject_with_newlines_stays_on_its_line_in_the_plugin_output(
    tmp_path: Path,
) -> None:
    with HostilePeer(_hostile_pem(tmp_path, INJECTION)) as peer:
        result = _check(_config(tmp_path, peer.port))
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    # The status line and one detail line: nothing the peer sent starts a line.
    assert len(lines) == 2, lines
    assert lines[0].startswith("KUBE-LOOPBACK-GUARD UNKNOWN - api0: probe of 127.0.0.1:")
    assert "CN=x\\nWATCHDOG=trigger\\nSTATUS=all fine\\r\\x1b[2J\\u2028" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_subject_with_newlines_cannot_inject_sd_notify_or_journal_lines(
    tmp_path: Path,
) -> None:
    with HostilePeer(_hostile_pem(tmp_path, INJECTION)) as peer:
        run = run_agent(_config(tmp_path, peer.port), tmp_path, lambda s: "UNKNOWN" in s)
    assert "Traceback" not in run.stderr
    for datagram in run.datagrams:
        # Every line of a datagram is an assignment the agent meant to send.
        lines = datagram.split("\n")
        assert all(line.split("=", 1)[0] in ("READY", "STATUS", "STOPPING") for line in lines)
    assert any("\\nWATCHDOG=trigger\\n" in s for s in run.statuses), run.statuses
    messages = [r["MESSAGE"] for r in run.records]
    assert any("\\nWATCHDOG=trigger\\n" in m for m in messages), messages
    assert not any("\n" in m or "\r" in m or "\u2028" in m for m in messages), messages


@pytest.mark.parametrize("version", [1, 3])
def test_an_unknown_x509_version_is_that_targets_unknown(
    tmp_path: Path, standin: StandinFactory, version: int
) -> None:
    pem = _hostile_pem(tmp_path, "apiserver-loopback-client@1767952693", version=version)
    healthy = standin(expires_in=timedelta(days=300))
    with HostilePeer(pem) as peer:
        direct = probe("127.0.0.1", peer.port, "apiserver-loopback-client", 2.0)
        result = _check(_config(tmp_path, peer.port, healthy.port))
    assert direct.cert is None and direct.error is not None
    assert direct.error.startswith("cannot parse the peer certificate")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3
    first, *details = result.stdout.splitlines()
    assert first.startswith("KUBE-LOOPBACK-GUARD UNKNOWN - api0: probe of 127.0.0.1:")
    assert "api1: loopback certificate expires" in first
    assert details[1].startswith("api1: OK, ")


def test_parse_failures_raise_value_error_only() -> None:
    for data in (b"", b"\x30\x03\x02\x01\x01", b"\x30" * 1000, os.urandom(300)):
        with pytest.raises(ValueError):
            read_loopback_cert(data)


def test_a_check_that_crashes_on_one_target_still_reports_the_others(
    standin: StandinFactory,
) -> None:
    from builders import target_config

    from agent.check import run_check
    from agent.config.types import Thresholds
    from agent.model import ProbeResult, State
    from agent.observe.discover import ProcessFinder

    healthy = standin(expires_in=timedelta(days=300))

    def flaky_probe(host: str, port: int, server_name: str, timeout: float) -> ProbeResult:
        # A stand-in for any bug below the probe's own error handling.
        if port == 1:
            raise RuntimeError("boom\nWATCHDOG=trigger")
        return probe(host, port, server_name, timeout)

    report = run_check(
        [
            target_config("bad", process_name="", host="127.0.0.1", port=1),
            target_config("good", process_name="", host="127.0.0.1", port=healthy.port),
        ],
        Thresholds(warning=timedelta(days=60), critical=timedelta(days=14)),
        ProcessFinder(),
        flaky_probe,
        lambda: datetime.now(timezone.utc),
    )
    bad, good = report.targets
    assert bad.assessment.state is State.UNKNOWN
    assert bad.assessment.error is not None
    assert "check failed: RuntimeError: boom\\nWATCHDOG=trigger" in bad.assessment.error
    assert good.assessment.state is State.OK


def test_a_lease_holder_with_newlines_is_shown_as_one_line(tmp_path: Path) -> None:
    from apiserver_peer import ApiserverPeer

    from agent.kube.kubeconfig import load_kubeconfig
    from agent.kube.lease import Lease, format_micro_time
    from agent.kube.lease_client import LeaseClient

    now = datetime.now(timezone.utc)
    with ApiserverPeer(tokens={}) as peer:
        # Whoever may update the Lease chooses holderIdentity.
        peer.put_lease(
            "kube-system",
            "klg",
            {
                "holderIdentity": "node-b\nWATCHDOG=trigger",
                "leaseDurationSeconds": 900,
                "acquireTime": format_micro_time(now),
                "renewTime": format_micro_time(now),
            },
        )
        client = LeaseClient(load_kubeconfig(str(peer.kubeconfig(tmp_path, user="node-a"))))
        lock = Lease(client, "kube-system", "klg", timedelta(minutes=15), identity="node-a")
        assert lock.holder() == "node-b\\nWATCHDOG=trigger"
        assert not lock.acquire(now)


def test_the_daemon_reports_every_target_beside_an_unreadable_certificate(
    tmp_path: Path, standin: StandinFactory
) -> None:
    pem = _hostile_pem(tmp_path, "apiserver-loopback-client@1767952693", version=1)
    healthy = standin(expires_in=timedelta(days=300))
    with HostilePeer(pem) as peer:
        metrics = tmp_path / "klg.prom"
        config = _config(tmp_path, peer.port, healthy.port, metrics=str(metrics))
        run = run_agent(config, tmp_path, lambda s: "api1: OK" in s)
    assert "Traceback" not in run.stderr, run.stderr
    assert any("api0: UNKNOWN" in s and "api1: OK" in s for s in run.statuses), run.statuses
    exposition = metrics.read_text()
    assert 'kube_loopback_guard_probe_success{target="api0"} 0' in exposition
    assert 'kube_loopback_guard_probe_success{target="api1"} 1' in exposition
    assert (tmp_path / "state" / "state.json").exists()
