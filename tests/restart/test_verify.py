"""Tests for agent.verify: /readyz against real TLS peers, and restart
verification with a clock passed in, then against a real restarted process."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

import pytest
from conftest import StandinFactory
from faulty_peers import (
    DripPeer,
    PlainHttpPeer,
    SilentPeer,
    TlsDripResponsePeer,
    TlsScriptedPeer,
    closed_port,
)
from supervisor import Supervised, Supervisors

from agent.model import LOOPBACK_SERVER_NAME, ApiserverProcess, LoopbackCert, ProbeResult
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe
from agent.restart.verify import (
    ReadyzResult,
    Verification,
    peer_address,
    readyz,
    readyz_url,
    verify_restart,
)

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
OLD_NOT_AFTER = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)
NEW_NOT_AFTER = datetime(2029, 11, 30, 11, 0, 0, tzinfo=timezone.utc)

# -- /readyz -------------------------------------------------------------------


def test_readyz_ok(standin: StandinFactory) -> None:
    api = standin()
    assert readyz(api.host, api.port, 5) == ReadyzResult(True, 200, "/readyz ok")
    # No SNI for an IP: the apiserver's ordinary certificate, as any client gets.
    assert api.server_names == [None]
    assert api.requests == ["/readyz"]


def test_readyz_sends_the_server_name(standin: StandinFactory) -> None:
    api = standin()
    assert readyz(api.host, api.port, 5, server_name="kubernetes").ok
    assert api.server_names == ["kubernetes"]


@pytest.mark.parametrize(
    ("options", "status", "detail"),
    [
        ({"readyz": "failed"}, 500, "/readyz not ok: 500"),
        ({"anonymous_auth": False}, 401, "/readyz not ok: 401 (anonymous access refused)"),
    ],
)
def test_readyz_not_ok(
    standin: StandinFactory, options: Dict[str, str], status: int, detail: str
) -> None:
    api = standin(**options)
    assert readyz(api.host, api.port, 5) == ReadyzResult(False, status, detail)


def test_readyz_refused() -> None:
    result = readyz("127.0.0.1", closed_port(), 2)
    assert result == ReadyzResult(False, None, "/readyz not ok: connection refused")


@pytest.mark.parametrize(
    ("peer_class", "phase"),
    [(SilentPeer, "TLS handshake"), (DripPeer, "TLS handshake"), (TlsDripResponsePeer, "response")],
)
def test_readyz_is_bounded_by_one_deadline(peer_class: type, phase: str) -> None:
    with peer_class() as peer:
        started = time.monotonic()
        result = readyz(peer.host, peer.port, 1.0)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.5
    assert result == ReadyzResult(
        False, None, f"/readyz not ok: timed out after 1.0s during {phase}"
    )


def test_readyz_plain_http_peer() -> None:
    with PlainHttpPeer() as peer:
        result = readyz(peer.host, peer.port, 2)
    assert not result.ok and result.status is None
    assert result.detail == "/readyz not ok: TLS handshake failed: the peer answered in plain HTTP"


@pytest.mark.parametrize(
    ("response", "ok", "status"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True, 200),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", True, 200),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnot ok", False, 200),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False, 503),
    ],
)
def test_readyz_reads_the_response_forms(response: bytes, ok: bool, status: int) -> None:
    with TlsScriptedPeer(response) as peer:
        result = readyz(peer.host, peer.port, 3)
    assert (result.ok, result.status) == (ok, status)


def test_readyz_garbage_response() -> None:
    with TlsScriptedPeer(b"SSH-2.0-OpenSSH_9.6\r\n") as peer:
        result = readyz(peer.host, peer.port, 3)
    assert result == ReadyzResult(
        False, None, "/readyz not ok: not an HTTP response: 'SSH-2.0-OpenSSH_9.6\\r\\n'"
    )


def _write(path: Path, pem: bytes) -> str:
    path.write_bytes(pem)
    return str(path)


def test_readyz_url_verifies_with_a_ca_file(standin: StandinFactory, tmp_path: Path) -> None:
    api = standin()
    serving_ca = _write(tmp_path / "ca.pem", api.serving_pair.ca_pem)
    assert readyz_url(f"https://127.0.0.1:{api.port}", 5, ca_file=serving_ca).ok
    assert readyz_url(f"https://localhost:{api.port}/", 5, ca_file=serving_ca).ok

    # The loopback CA signed no certificate this client is served.
    wrong = readyz_url(f"https://127.0.0.1:{api.port}", 5, _write(tmp_path / "w", api.pair.ca_pem))
    assert not wrong.ok
    assert wrong.detail.startswith("/readyz not ok: certificate not trusted: ")

    mismatch = readyz("127.0.0.1", api.port, 5, server_name="etcd.example", ca_file=serving_ca)
    assert not mismatch.ok
    assert mismatch.detail.startswith("/readyz not ok: certificate not trusted: Hostname mismatch")

    missing = readyz_url(f"https://127.0.0.1:{api.port}", 5, str(tmp_path / "absent.pem"))
    assert (missing.ok, missing.status) == (False, None)
    assert missing.detail == (
        f"/readyz not checked: cannot load CA file {tmp_path / 'absent.pem'}: "
        "No such file or directory"
    )


def test_readyz_url_ipv6(standin: StandinFactory, ipv6_loopback: str, tmp_path: Path) -> None:
    api = standin(host=ipv6_loopback)
    ca = _write(tmp_path / "ca.pem", api.serving_pair.ca_pem)
    assert readyz_url(f"https://[::1]:{api.port}", 5, ca_file=ca).ok


def test_readyz_url_without_verification(standin: StandinFactory) -> None:
    api = standin()
    assert readyz_url(f"https://127.0.0.1:{api.port}", 5).ok


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://10.0.0.12:6443", ("10.0.0.12", 6443)),
        ("https://[fd00::12]:6443/", ("fd00::12", 6443)),
        ("https://master-2.example", ("master-2.example", 443)),
    ],
)
def test_peer_address(url: str, address: Tuple[str, int]) -> None:
    assert peer_address(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.12:6443",
        "https://10.0.0.12:6443/readyz",
        "https://10.0.0.12:99999",
        "https://user@10.0.0.12:6443",
        "https://10.0.0.12:6443?x=1",
        "10.0.0.12:6443",
        "https://",
    ],
)
def test_peer_address_refuses(url: str) -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.12|https://"):
        peer_address(url)


# -- verify_restart with a clock passed in -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def verify(
        self,
        old: Optional[ApiserverProcess],
        old_not_after: Optional[datetime],
        find: Optional[Callable[[], Optional[ApiserverProcess]]],
        probe_once: Callable[[], ProbeResult],
        ready: Callable[[], ReadyzResult],
        seconds: float = 60,
    ) -> Verification:
        """verify_restart on this clock, the deadline `seconds` from now, every 2 s."""
        old_cert = None if old_not_after is None else _probed(old_not_after).cert
        return verify_restart(
            old,
            old_cert,
            find,
            probe_once,
            ready,
            deadline=self.now + seconds,
            monotonic=self.monotonic,
            sleep=self.sleep,
            interval=2.0,
        )


def _process(pid: int, started_at: datetime = T0) -> ApiserverProcess:
    return ApiserverProcess(pid, "kube-apiserver", started_at, 6443, None)


def _probed(not_after: Optional[datetime], error: str = "connection refused") -> ProbeResult:
    cert = None
    if not_after is not None:
        not_before = not_after - timedelta(days=1096)
        cert = LoopbackCert(
            subject="CN=apiserver-loopback-client@1",
            issuer="CN=apiserver-loopback-client-ca@1",
            serial="2",
            sha256=f"sha256-of-{not_after.isoformat()}",
            not_before=not_before,
            not_after=not_after,
            generated_at=not_before + timedelta(hours=1),
        )
    return ProbeResult("127.0.0.1", 6443, LOOPBACK_SERVER_NAME, cert, "ok", None if cert else error)


READY = ReadyzResult(True, 200, "/readyz ok")
NOT_READY = ReadyzResult(False, 500, "/readyz not ok: 500")


_T = TypeVar("_T")


def _rounds(*values: _T) -> Callable[[], _T]:
    """Return a callable answering values in turn, then the last one forever."""
    answers = list(values)

    def next_answer() -> _T:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return next_answer


OLD = _process(100)


def test_first_round_success() -> None:
    clock = Clock()
    result = clock.verify(
        OLD, OLD_NOT_AFTER, lambda: _process(200), lambda: _probed(NEW_NOT_AFTER), lambda: READY
    )
    assert result.ok and result.missing == ()
    assert (result.new_process, result.new_not_after) == (_process(200), NEW_NOT_AFTER)
    assert result.detail == (
        "restart succeeded: PID 100 -> 200, not_after 2026-12-01T08:00:00Z -> "
        "2029-11-30T11:00:00Z, /readyz ok (after 0s)"
    )
    assert clock.sleeps == []


def test_waits_for_each_condition_in_turn() -> None:
    clock = Clock()
    result = clock.verify(
        OLD,
        OLD_NOT_AFTER,
        _rounds(OLD, None, _process(200)),
        _rounds(_probed(OLD_NOT_AFTER), _probed(None), _probed(None), _probed(NEW_NOT_AFTER)),
        _rounds(READY, NOT_READY, NOT_READY, NOT_READY, READY),
    )
    assert result.ok
    assert clock.sleeps == [2.0, 2.0, 2.0, 2.0]
    assert result.detail.endswith("/readyz ok (after 8s)")


def test_what_was_seen_counts_once_seen() -> None:
    # The new process shows in round one, then a probe reaches it in round two
    # while discovery briefly finds nothing (it is being replaced again).
    clock = Clock()
    result = clock.verify(
        OLD,
        OLD_NOT_AFTER,
        _rounds(_process(200), None),
        _rounds(_probed(None), _probed(NEW_NOT_AFTER), _probed(None)),
        lambda: READY,
    )
    assert result.ok
    assert (result.new_process, result.new_not_after) == (_process(200), NEW_NOT_AFTER)
    assert len(clock.sleeps) == 1


def test_same_pid_with_another_start_time_is_a_new_process() -> None:
    clock = Clock()
    again = _process(100, T0 + timedelta(minutes=3))
    result = clock.verify(
        OLD, OLD_NOT_AFTER, lambda: again, lambda: _probed(NEW_NOT_AFTER), lambda: READY
    )
    assert result.ok and result.new_process == again


def test_unknown_old_state_accepts_any_process_and_certificate() -> None:
    clock = Clock()
    result = clock.verify(None, None, lambda: OLD, lambda: _probed(OLD_NOT_AFTER), lambda: READY)
    assert result.ok
    assert result.detail.startswith(
        "restart succeeded: PID ? -> 100, not_after ? -> 2026-12-01T08:00:00Z"
    )


def test_without_a_process_to_watch_only_the_certificate_and_readyz_count() -> None:
    clock = Clock()
    result = clock.verify(
        None,
        OLD_NOT_AFTER,
        None,
        _rounds(_probed(OLD_NOT_AFTER), _probed(NEW_NOT_AFTER)),
        lambda: READY,
    )
    assert result.ok and result.new_process is None
    assert result.detail == (
        "restart succeeded: not_after 2026-12-01T08:00:00Z -> 2029-11-30T11:00:00Z, "
        "/readyz ok (after 2s)"
    )

    failed = clock.verify(
        None, OLD_NOT_AFTER, None, lambda: _probed(OLD_NOT_AFTER), lambda: READY, seconds=0
    )
    assert failed.missing == (
        "certificate not renewed (the same certificate, not_after 2026-12-01T08:00:00Z)",
    )


def test_fails_at_the_deadline_saying_what_never_held() -> None:
    clock = Clock()
    start = clock.now
    result = clock.verify(
        OLD,
        OLD_NOT_AFTER,
        lambda: OLD,
        lambda: _probed(OLD_NOT_AFTER),
        lambda: NOT_READY,
        seconds=5,
    )
    assert not result.ok
    assert clock.sleeps == [2.0, 2.0, 1.0]
    assert clock.now == start + 5
    assert result.missing == (
        "no new process (PID 100 unchanged)",
        "certificate not renewed (the same certificate, not_after 2026-12-01T08:00:00Z)",
        "/readyz not ok: 500",
    )
    assert (result.new_process, result.new_not_after) == (None, None)
    assert result.detail == (
        "restart failed: no new process (PID 100 unchanged); certificate not renewed "
        "(the same certificate, not_after 2026-12-01T08:00:00Z); /readyz not ok: 500 "
        "(checked for 5s)"
    )


@pytest.mark.parametrize(
    ("found", "probed", "missing"),
    [
        (
            None,
            _probed(None),
            (
                "no new process (none found)",
                "certificate not renewed (probe failed: connection refused)",
            ),
        ),
        (
            _process(200),
            _probed(OLD_NOT_AFTER - timedelta(days=1)),
            (
                "certificate not renewed (not_before 2023-11-30T08:00:00Z says it was issued "
                "before the restart began (not_before 2023-12-01T08:00:00Z))",
            ),
        ),
    ],
)
def test_missing_wording(
    found: Optional[ApiserverProcess], probed: ProbeResult, missing: Tuple[str, ...]
) -> None:
    clock = Clock()
    result = clock.verify(
        OLD, OLD_NOT_AFTER, lambda: found, lambda: probed, lambda: READY, seconds=0
    )
    assert result.missing == missing


def test_a_downgrade_with_an_earlier_not_after_is_a_renewal() -> None:
    # 1.33 (1096 days) back to 1.32 (365 days): the new certificate expires
    # earlier, but it was issued after the restart began (issue 8.5).
    clock = Clock()
    began = T0
    old = _probed(OLD_NOT_AFTER).cert
    assert old is not None
    issued = began + timedelta(seconds=3)
    downgraded = LoopbackCert(
        subject="CN=apiserver-loopback-client@2",
        issuer="CN=apiserver-loopback-client-ca@2",
        serial="7",
        sha256="new",
        not_before=issued - timedelta(hours=1),
        not_after=issued - timedelta(hours=1) + timedelta(days=365),
        generated_at=issued,
    )
    assert downgraded.not_after < OLD_NOT_AFTER + timedelta(days=1096)
    served = ProbeResult("127.0.0.1", 6443, LOOPBACK_SERVER_NAME, downgraded, "ok", None)
    result = verify_restart(
        OLD, old, lambda: _process(200), lambda: served, lambda: READY,
        deadline=clock.now, monotonic=clock.monotonic, sleep=clock.sleep, began=began,
    )  # fmt: skip
    assert result.ok, result.detail
    # A certificate from before the restart began is not one, whatever its dates.
    stale = ProbeResult("127.0.0.1", 6443, LOOPBACK_SERVER_NAME, downgraded, "ok", None)
    late = verify_restart(
        OLD, old, lambda: _process(200), lambda: stale, lambda: READY,
        deadline=clock.now, monotonic=clock.monotonic, sleep=clock.sleep,
        began=issued + timedelta(minutes=1),
    )  # fmt: skip
    assert not late.ok
    assert late.missing[0].startswith("certificate not renewed (not_before ")


def test_one_round_runs_even_past_the_deadline() -> None:
    clock = Clock()
    calls: List[str] = []

    def find() -> Optional[ApiserverProcess]:
        calls.append("find")
        return OLD

    result = clock.verify(
        OLD, OLD_NOT_AFTER, find, lambda: _probed(OLD_NOT_AFTER), lambda: READY, seconds=-10
    )
    assert not result.ok and calls == ["find"] and clock.sleeps == []


# -- verify_restart against a real restarted apiserver -------------------------


class Observed:
    """The real observations of one supervised apiserver, as the agent makes them."""

    def __init__(self, api: Supervised) -> None:
        self.api = api

    def find(self) -> Optional[ApiserverProcess]:
        # With a single kube-apiserver, discovery does not check the port, and
        # a finder keeps what it found while that still runs: while ours
        # restarts, another one on this machine (the packaging tests' one)
        # would be found, and kept. So a fresh scan, and our port only.
        found = ProcessFinder().find("kube-apiserver", self.api.port).process
        return found if found is not None and found.secure_port == self.api.port else None

    def probe_once(self) -> ProbeResult:
        return probe("127.0.0.1", self.api.port, LOOPBACK_SERVER_NAME, 2.0)

    def ready(self) -> ReadyzResult:
        return readyz("127.0.0.1", self.api.port, 2.0)


def _verify(
    api: Supervised, restart: bool, seconds: float
) -> Tuple[Verification, float, ApiserverProcess, datetime]:
    """Given a supervised apiserver, whether to SIGTERM it and a deadline in
    seconds, verify its restart; return the verification, how long it took,
    and the old process and not_after."""
    seen = Observed(api)
    old = seen.find()
    old_cert = seen.probe_once().cert
    assert old is not None and old_cert is not None
    if restart:
        os.kill(old.pid, signal.SIGTERM)
    started = time.monotonic()
    result = verify_restart(
        old,
        old_cert,
        seen.find,
        seen.probe_once,
        seen.ready,
        deadline=started + seconds,
        interval=0.2,
        began=datetime.now(timezone.utc),
    )
    return result, time.monotonic() - started, old, old_cert.not_after


def test_real_restart_is_verified(supervisors: Supervisors) -> None:
    api = supervisors.start()

    result, elapsed, old, old_not_after = _verify(api, restart=True, seconds=15)

    assert result.ok, result.detail
    assert result.missing == ()
    assert result.new_process is not None and result.new_process.pid == api.child_pid()
    assert result.new_process.pid != old.pid
    assert result.new_not_after is not None and result.new_not_after > old_not_after
    assert result.detail.startswith(f"restart succeeded: PID {old.pid} -> {result.new_process.pid}")
    assert elapsed < 10


@pytest.mark.slow
def test_restart_with_the_same_certificate_dates_is_not_renewed(
    supervisors: Supervisors,
) -> None:
    # Every child generates a new key but the same dates, as if the restart
    # had reached a process that kept its certificate.
    fixed = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api = supervisors.start(f"--generated-at={fixed}")

    result, elapsed, _, _ = _verify(api, restart=True, seconds=4)

    assert not result.ok
    assert result.new_process is not None and result.new_process.pid == api.child_pid()
    (missing,) = result.missing
    # Another key, but not issued after the restart began.
    assert missing.startswith("certificate not renewed (not_before ")
    assert 4 <= elapsed < 6


def test_no_restart_at_all(supervisors: Supervisors) -> None:
    api = supervisors.start()

    result, elapsed, old, _ = _verify(api, restart=False, seconds=1)

    assert not result.ok
    assert len(result.missing) == 2
    assert result.missing[0] == f"no new process (PID {old.pid} unchanged)"
    assert result.missing[1].startswith("certificate not renewed (the same certificate, ")
    assert 1 <= elapsed < 3


@pytest.mark.slow
def test_new_apiserver_not_ready(supervisors: Supervisors) -> None:
    api = supervisors.start("--readyz=failed")

    result, elapsed, _, old_not_after = _verify(api, restart=True, seconds=4)

    assert not result.ok
    assert result.missing == ("/readyz not ok: 500",)
    assert result.new_process is not None
    assert result.new_not_after is not None and result.new_not_after > old_not_after
    assert result.detail.startswith("restart failed: /readyz not ok: 500 (checked for ")
    assert 4 <= elapsed < 6
