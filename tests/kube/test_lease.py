"""Tests for agent.lease: the pure decision in tables, the lock and the client
against a stand-in API server over verified TLS, and peers that misbehave.

The faulty-peer tests measure elapsed time because the client's contract is one
deadline per call, whatever the peer does.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from apiserver_peer import ApiserverPeer
from faulty_peers import (
    DripPeer,
    SilentPeer,
    TlsDripResponsePeer,
    TlsScriptedPeer,
    closed_port,
)

from agent.kube.kubeconfig import ApiCredentials, load_kubeconfig
from agent.kube.lease import (
    Lease,
    LeaseConflict,
    LeaseError,
    LeaseRecord,
    LeaseSpec,
    current_holder,
    format_micro_time,
    lease_is_free,
    parse_micro_time,
)
from agent.kube.lease_client import LeaseClient
from agent.model import LOOPBACK_SERVER_NAME

NS, NAME = "kube-system", "kube-loopback-guard"
TOKEN = "s3cr3t-bearer-token-0123456789"
DURATION = timedelta(minutes=15)
NOW = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=timezone.utc)
# Short enough to keep the suite quick, long enough to dwarf scheduling noise.
DEADLINE = 1.0
SLACK = 0.5


@pytest.fixture
def peer() -> Iterator[ApiserverPeer]:
    with ApiserverPeer(
        tokens={TOKEN: "robot"},
        deny={
            "outsider": frozenset({"get", "create", "update"}),
            "reader": frozenset({"create", "update"}),
        },
    ) as server:
        yield server


def client_for(
    peer: ApiserverPeer, directory: Path, timeout: float = 5.0, **kubeconfig: Any
) -> LeaseClient:
    return LeaseClient(
        load_kubeconfig(str(peer.kubeconfig(directory, **kubeconfig))), timeout=timeout
    )


class Tick:
    """A monotonic clock the test moves: how long a record has been seen unchanged."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta.total_seconds()


TICK = Tick()


def lock_for(peer: ApiserverPeer, directory: Path, node: str, tick: Optional[Tick] = None) -> Lease:
    client = client_for(peer, directory, user=node)
    return Lease(client, NS, NAME, DURATION, identity=node, monotonic=tick or TICK)


def take_over(lock: Lease, tick: Tick, now: datetime = NOW) -> bool:
    """As the daemon does: see the other holder's record, watch it stay
    unchanged for its duration, then take it."""
    assert not lock.acquire(now)  # first sight: live, whatever its renewTime says
    tick.advance(DURATION)
    return lock.acquire(now)


def dead_holder(peer: ApiserverPeer, now: datetime, age: timedelta, holder: str = "dead") -> None:
    peer.put_lease(
        NS,
        NAME,
        {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(DURATION.total_seconds()),
            "acquireTime": format_micro_time(now - age),
            "renewTime": format_micro_time(now - age),
            "leaseTransitions": 4,
        },
    )


def refusal(call: Any, *args: Any) -> LeaseError:
    with pytest.raises(LeaseError) as caught:
        call(*args)
    for text in (str(caught.value), repr(caught.value)):
        assert TOKEN not in text and "PRIVATE KEY" not in text
    return caught.value


# -- the decision, in tables -------------------------------------------------------


def record(holder: Optional[str], seconds: Optional[int] = 900) -> LeaseRecord:
    renew_time = NOW - timedelta(days=3)  # never looked at: the holder's clock
    spec = LeaseSpec(holder, seconds, renew_time, renew_time, 0)
    return LeaseRecord(NS, NAME, "1", spec)


@pytest.mark.parametrize(
    ("lease", "unchanged_for", "holder", "free_for_me"),
    [
        pytest.param(None, 0.0, None, True, id="absent"),
        pytest.param(record(None), 0.0, None, True, id="released"),
        pytest.param(record(""), 0.0, None, True, id="empty-holder"),
        pytest.param(record("me"), 5000.0, "me", True, id="mine-however-old"),
        pytest.param(record("other"), 0.0, "other", False, id="first-sight"),
        pytest.param(record("other"), 899.999, "other", False, id="just-before"),
        pytest.param(record("other"), 900.0, None, True, id="unchanged-for-its-duration"),
        pytest.param(record("other", None), 0.0, None, True, id="no-duration"),
    ],
)
def test_lease_is_free(
    lease: Optional[LeaseRecord], unchanged_for: float, holder: Optional[str], free_for_me: bool
) -> None:
    # renewTime is three days old in every row: only the local observation counts.
    assert current_holder(lease, unchanged_for, "me") == holder
    assert lease_is_free(lease, "me", unchanged_for) is free_for_me


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T12:00:00.123456Z", NOW),
        ("2026-11-29T12:00:00.123456789Z", NOW),
        ("2026-11-29T12:00:00.1234Z", NOW.replace(microsecond=123400)),
        ("2026-11-29T12:00:00Z", NOW.replace(microsecond=0)),
        ("2026-11-29T14:00:00.123456+02:00", NOW),
        ("2026-11-29t11:30:00.123456-00:30", NOW),
    ],
)
def test_parse_micro_time(text: str, expected: datetime) -> None:
    assert parse_micro_time(text) == expected
    assert parse_micro_time(text).tzinfo == timezone.utc


@pytest.mark.parametrize("text", ["", "2026-11-29", "2026-11-29 12:00:00Z", "2026-11-29T12:00:00"])
def test_parse_micro_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        parse_micro_time(text)


def test_format_micro_time() -> None:
    assert format_micro_time(NOW) == "2026-11-29T12:00:00.123456Z"
    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert format_micro_time(berlin.replace(microsecond=0)) == "2026-11-29T12:00:00.000000Z"
    with pytest.raises(ValueError):
        format_micro_time(NOW.replace(tzinfo=None))


def test_lease_arguments(peer: ApiserverPeer, tmp_path: Path) -> None:
    client = client_for(peer, tmp_path)
    assert Lease(client, NS, NAME, DURATION).identity == socket.gethostname()
    with pytest.raises(ValueError, match="at least one second"):
        Lease(client, NS, NAME, timedelta(milliseconds=500), identity="me")
    with pytest.raises(ValueError, match="must not be empty"):
        Lease(client, NS, NAME, DURATION, identity="")
    lock = Lease(client, NS, NAME, DURATION, identity="me")
    assert str(lock) == "Lease kube-system/kube-loopback-guard for me (900s)"
    for method in (lock.acquire, lock.renew, lock.release):
        with pytest.raises(ValueError, match="timezone-aware"):
            method(NOW.replace(tzinfo=None))


# -- the client against the stand-in ------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_client_create_get_update(tmp_path: Path, chunked: bool) -> None:
    with ApiserverPeer(chunked=chunked) as peer:
        client = client_for(peer, tmp_path, user="node-a")
        assert client.get(NS, NAME) is None

        spec = LeaseSpec("node-a", 900, NOW, NOW, 0)
        created = client.create(NS, NAME, spec)
        assert (created.namespace, created.name, created.spec) == (NS, NAME, spec)
        assert client.get(NS, NAME) == created

        stored = peer.lease(NS, NAME)
        assert stored is not None and stored["spec"] == {
            "holderIdentity": "node-a",
            "leaseDurationSeconds": 900,
            "acquireTime": "2026-11-29T12:00:00.123456Z",
            "renewTime": "2026-11-29T12:00:00.123456Z",
            "leaseTransitions": 0,
        }

        later = dataclasses.replace(spec, renew_time=NOW + timedelta(seconds=30))
        updated = client.update(dataclasses.replace(created, spec=later))
        assert updated.spec == later
        assert int(updated.resource_version) > int(created.resource_version)

        stale = refusal(client.update, dataclasses.replace(created, spec=later))
        assert isinstance(stale, LeaseConflict)
        assert (stale.status, stale.reason) == (409, "Conflict")
        assert "the object has been modified" in str(stale)

        exists = refusal(client.create, NS, NAME, spec)
        assert isinstance(exists, LeaseConflict)
        assert (exists.status, exists.reason) == (409, "AlreadyExists")

        peer.delete_lease(NS, NAME)
        gone = refusal(client.update, updated)
        assert isinstance(gone, LeaseConflict) and gone.status == 404
        assert peer.statuses("POST") == [201, 409]
        assert all(user == "node-a" for _m, _p, _s, user in peer.log)


def test_token_auth(peer: ApiserverPeer, tmp_path: Path) -> None:
    client = client_for(peer, tmp_path, token=TOKEN)
    assert client.credentials.auth == "bearer token"
    assert Lease(client, NS, NAME, DURATION, identity="master-1").acquire(NOW)
    assert {user for _m, _p, _s, user in peer.log} == {"robot"}
    assert TOKEN not in repr(client) and TOKEN not in repr(client.credentials)


def test_server_by_name_and_tls_server_name(peer: ApiserverPeer, tmp_path: Path) -> None:
    port = peer.url.rsplit(":", 1)[1]
    by_name = client_for(peer, tmp_path, server=f"https://localhost:{port}")
    assert by_name.get(NS, NAME) is None
    # The serving certificate is for `kubernetes`, not for this made-up name.
    renamed = client_for(
        peer, tmp_path, server=f"https://127.0.0.1:{port}", tls_server_name="kubernetes"
    )
    assert renamed.get(NS, NAME) is None


def test_ipv6(tmp_path: Path, ipv6_loopback: str) -> None:
    with ApiserverPeer(host=ipv6_loopback) as peer:
        assert peer.url.startswith("https://[::1]:")
        assert lock_for(peer, tmp_path, "node-a").acquire(NOW)


def test_update_keeps_what_it_does_not_own(peer: ApiserverPeer, tmp_path: Path) -> None:
    dead_holder(peer, NOW, timedelta(hours=1))
    with peer.lock:
        stored = peer.leases[(NS, NAME)]
        stored["metadata"]["labels"] = {"app": "kube-loopback-guard"}
        stored["spec"]["strategy"] = "OldestEmulationVersion"
    tick = Tick()
    assert take_over(lock_for(peer, tmp_path, "node-a", tick), tick)
    after = peer.lease(NS, NAME)
    assert after is not None
    assert after["metadata"]["labels"] == {"app": "kube-loopback-guard"}
    assert after["spec"]["strategy"] == "OldestEmulationVersion"


# -- the lock ------------------------------------------------------------------------


def test_acquire_renew_release(peer: ApiserverPeer, tmp_path: Path) -> None:
    tick = Tick()
    a, b = lock_for(peer, tmp_path, "node-a", tick), lock_for(peer, tmp_path, "node-b", tick)
    assert a.holder() is None
    assert a.acquire(NOW)
    assert a.holder() == b.holder() == "node-a"
    assert not b.acquire(NOW + timedelta(minutes=1))
    assert not b.renew(NOW)

    tick.advance(timedelta(minutes=10))
    assert a.renew(NOW + timedelta(minutes=10))
    # Renewed at +10m: b sees a changed record and watches it afresh, so at
    # +20m (past the first renewal's lapse) it is still a's.
    assert not b.acquire(NOW + timedelta(minutes=10))
    tick.advance(timedelta(minutes=10))
    assert not b.acquire(NOW + timedelta(minutes=20))
    assert a.acquire(NOW + timedelta(minutes=21))  # ours: a renewal
    stored = peer.lease(NS, NAME)
    assert stored is not None
    assert stored["spec"]["acquireTime"] == format_micro_time(NOW)
    assert stored["spec"]["renewTime"] == format_micro_time(NOW + timedelta(minutes=21))

    before = peer.lease(NS, NAME)
    b.release(NOW)  # not b's: nothing happens
    assert peer.lease(NS, NAME) == before

    a.release(NOW + timedelta(minutes=22))
    released = peer.lease(NS, NAME)
    assert released is not None and "holderIdentity" not in released["spec"]
    assert released["spec"]["leaseTransitions"] == 0
    assert a.holder() is None
    assert not a.renew(NOW + timedelta(minutes=23))
    a.release(NOW + timedelta(minutes=23))  # twice is fine

    assert b.acquire(NOW + timedelta(minutes=23))  # released: free at first sight
    taken = peer.lease(NS, NAME)
    assert taken is not None
    assert taken["spec"]["holderIdentity"] == "node-b"
    assert taken["spec"]["leaseTransitions"] == 1


def test_takes_over_a_dead_holders_lease_after_watching_it_for_its_duration(
    peer: ApiserverPeer, tmp_path: Path
) -> None:
    dead_holder(peer, NOW, age=DURATION + timedelta(seconds=1))
    tick = Tick()
    lock = lock_for(peer, tmp_path, "node-a", tick)
    # Its renewTime lies a duration in the past, but that is the holder's clock.
    assert lock.holder() == "dead"
    tick.advance(DURATION - timedelta(seconds=1))
    assert not lock.acquire(NOW)
    tick.advance(timedelta(seconds=1))
    assert lock.holder() is None
    assert lock.acquire(NOW)
    stored = peer.lease(NS, NAME)
    assert stored is not None
    assert stored["spec"]["holderIdentity"] == "node-a"
    assert stored["spec"]["leaseTransitions"] == 5
    assert stored["spec"]["acquireTime"] == format_micro_time(NOW)
    assert peer.statuses("PUT") == [200]


def test_a_skewed_clock_does_not_end_a_live_lease(peer: ApiserverPeer, tmp_path: Path) -> None:
    # node-b renews every few minutes, but its wall clock runs an hour behind:
    # by renewTime its lease has always lapsed. It is live: it keeps changing.
    tick = Tick()
    lock = lock_for(peer, tmp_path, "node-a", tick)
    for minute in range(0, 60, 5):
        dead_holder(peer, NOW + timedelta(minutes=minute), age=timedelta(hours=1), holder="node-b")
        assert not lock.acquire(NOW + timedelta(minutes=minute))
        tick.advance(timedelta(minutes=5))
    assert lock.holder() == "node-b"
    assert peer.statuses("PUT") == peer.statuses("POST") == []


def test_does_not_take_a_live_lease(peer: ApiserverPeer, tmp_path: Path) -> None:
    dead_holder(peer, NOW, age=DURATION - timedelta(seconds=1), holder="node-b")
    before = peer.lease(NS, NAME)
    lock = lock_for(peer, tmp_path, "node-a", Tick())
    assert not lock.acquire(NOW)
    assert lock.holder() == "node-b"
    assert peer.lease(NS, NAME) == before
    assert peer.statuses("PUT") == peer.statuses("POST") == []


def test_renew_after_a_takeover_fails(peer: ApiserverPeer, tmp_path: Path) -> None:
    tick = Tick()
    a, b = lock_for(peer, tmp_path, "node-a", tick), lock_for(peer, tmp_path, "node-b", tick)
    assert a.acquire(NOW)
    late = NOW + DURATION + timedelta(seconds=1)
    assert take_over(b, tick, late)
    assert not a.renew(late)
    a.release(late)
    assert a.holder() == "node-b"


def race(locks: List[Lease], now: datetime) -> List[bool]:
    """Let every lock try to acquire at the same moment; return who won."""
    barrier = threading.Barrier(len(locks))
    won: List[Optional[bool]] = [None] * len(locks)
    errors: List[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=5)
            won[index] = locks[index].acquire(now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(locks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    return [bool(w) for w in won]


@pytest.mark.slow
def test_three_agents_racing(peer: ApiserverPeer, tmp_path: Path) -> None:
    locks = [lock_for(peer, tmp_path, f"node-{n}") for n in "abc"]
    for round_number in range(30):
        now = NOW + timedelta(hours=round_number)
        # Even rounds race to create the Lease, odd ones to take over a dead holder's.
        if round_number % 2:
            dead_holder(peer, now, age=timedelta(hours=1))
            for lock in locks:  # each watches it stay unchanged for its duration
                assert lock.holder() == "dead"
            TICK.advance(DURATION)
        else:
            peer.delete_lease(NS, NAME)
        won = race(locks, now)
        assert won.count(True) == 1, f"round {round_number}: {won}"
        winner = locks[won.index(True)].identity
        assert all(lock.holder() == winner for lock in locks)
    # The races were real: the API server turned writers away.
    conflicts = peer.statuses("POST").count(409) + peer.statuses("PUT").count(409)
    assert conflicts > 0


# -- refusals ----------------------------------------------------------------------


def test_401_says_the_credentials_were_rejected(peer: ApiserverPeer, tmp_path: Path) -> None:
    client = client_for(peer, tmp_path, token="not-" + TOKEN)
    error = refusal(Lease(client, NS, NAME, DURATION, identity="x").acquire, NOW)
    assert error.status == 401
    message = str(error)
    assert "HTTP 401 Unauthorized: Unauthorized" in message
    assert "rejected the bearer token of" in message
    assert (
        "get, create and update on leases.coordination.k8s.io in namespace kube-system" in message
    )
    assert "not-" + TOKEN not in message


def test_403_names_the_missing_verb(peer: ApiserverPeer, tmp_path: Path) -> None:
    outsider = lock_for(peer, tmp_path, "outsider")
    error = refusal(outsider.acquire, NOW)
    assert (error.status, error.reason) == (403, "Forbidden")
    assert 'User "outsider" cannot get resource "leases"' in str(error)
    assert "may not get leases.coordination.k8s.io in namespace kube-system" in str(error)

    reader = lock_for(peer, tmp_path, "reader")
    error = refusal(reader.acquire, NOW)
    assert "may not create leases.coordination.k8s.io in namespace kube-system" in str(error)
    assert "(see RBAC in the README)" in str(error)

    dead_holder(peer, NOW, timedelta(hours=1))
    assert reader.holder() == "dead"
    TICK.advance(DURATION)
    error = refusal(reader.acquire, NOW)
    assert "may not update leases.coordination.k8s.io" in str(error)


# -- TLS ---------------------------------------------------------------------------


def test_wrong_ca_is_a_clear_tls_error(peer: ApiserverPeer, tmp_path: Path) -> None:
    with ApiserverPeer() as other:
        client = client_for(peer, tmp_path, token=TOKEN, ca_pem=other.serving.ca_pem)
    error = refusal(client.get, NS, NAME)
    message = str(error)
    assert re.search(r"TLS verification of the server failed: self.signed certificate", message)
    assert "certificate-authority(-data)" in message
    assert peer.log == []  # nothing was sent to an unverified server


def test_wrong_server_name_is_a_clear_tls_error(peer: ApiserverPeer, tmp_path: Path) -> None:
    client = client_for(peer, tmp_path, tls_server_name="api.elsewhere.example")
    message = str(refusal(client.get, NS, NAME))
    assert "TLS verification of the server failed" in message
    assert "set tls-server-name in the kubeconfig" in message


def test_insecure_skips_verification(peer: ApiserverPeer, tmp_path: Path) -> None:
    with ApiserverPeer() as other:
        creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, ca_pem=other.serving.ca_pem)))
    client = LeaseClient(dataclasses.replace(creds, ca_pem=None, insecure=True), timeout=5)
    assert client.get(NS, NAME) is None


def test_client_key_without_memfd_leaves_no_file(
    peer: ApiserverPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = peer.kubeconfig(tmp_path, user="node-a")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    client = LeaseClient(load_kubeconfig(str(kubeconfig)), timeout=5)
    assert list(scratch.iterdir()) == []
    assert client.get(NS, NAME) is None
    assert peer.log[-1][3] == "node-a"


def test_mismatched_client_key(peer: ApiserverPeer, tmp_path: Path) -> None:
    creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, user="node-a")))
    other_key = peer.client_ca.issue("node-b").key_pem
    with pytest.raises(LeaseError, match="client certificate and key cannot be loaded") as caught:
        LeaseClient(dataclasses.replace(creds, client_key_pem=other_key))
    assert "PRIVATE KEY" not in str(caught.value)


def test_unusable_ca(peer: ApiserverPeer, tmp_path: Path) -> None:
    creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, token=TOKEN)))
    garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    with pytest.raises(LeaseError, match="the certificate authority cannot be loaded"):
        LeaseClient(dataclasses.replace(creds, ca_pem=garbage))


# -- peers that misbehave ------------------------------------------------------------


def creds_for(port: int, ca_pem: Optional[bytes] = None) -> ApiCredentials:
    return ApiCredentials(
        kubeconfig="/test/kubeconfig",
        context="test",
        server=f"https://127.0.0.1:{port}",
        ca_pem=ca_pem,
        insecure=ca_pem is None,
        token=TOKEN,
        tls_server_name=LOOPBACK_SERVER_NAME if ca_pem is not None else None,
    )


def timed_refusal(client: LeaseClient) -> Tuple[LeaseError, float]:
    started = time.monotonic()
    error = refusal(client.get, NS, NAME)
    return error, time.monotonic() - started


@pytest.mark.parametrize(
    ("peer_class", "phase"),
    [(SilentPeer, "TLS handshake"), (DripPeer, "TLS handshake")],
)
def test_a_peer_that_never_answers_is_bounded(peer_class: Any, phase: str) -> None:
    with peer_class() as silent:
        error, elapsed = timed_refusal(LeaseClient(creds_for(silent.port), timeout=DEADLINE))
    assert str(error).endswith(f": timed out after 1.0s during {phase}")
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + SLACK


def test_a_response_dripped_byte_by_byte_is_bounded() -> None:
    with TlsDripResponsePeer() as drip:
        client = LeaseClient(creds_for(drip.port, drip.pair.ca_pem), timeout=DEADLINE)
        error, elapsed = timed_refusal(client)
    assert str(error).endswith(": timed out after 1.0s during response")
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + SLACK


def test_connection_refused() -> None:
    error = refusal(LeaseClient(creds_for(closed_port()), timeout=DEADLINE).get, NS, NAME)
    assert str(error).endswith(": connection refused")


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
            "response body incomplete (1 bytes, 99 more expected)",
        ),
        (b"", "no HTTP response: the peer closed the connection"),
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP response: 'SSH-2.0-OpenSSH\\r\\n'"),
        (ok(b'{"kind":"Pod"}'), "answered with a Lease we cannot read: not a Lease"),
        (
            ok(b'{"kind":"Lease","metadata":{"name":"n","namespace":"s"},"spec":{}}'),
            "answered with a Lease we cannot read: resourceVersion is missing",
        ),
        (
            ok(
                b'{"kind":"Lease","metadata":{"name":"n","namespace":"s","resourceVersion":"1"},'
                b'"spec":{"renewTime":"yesterday"}}'
            ),
            "answered with a Lease we cannot read: 'yesterday' is not an RFC 3339 time",
        ),
        (
            ok(
                b'{"kind":"Lease","metadata":{"name":"n","namespace":"s","resourceVersion":"1"},'
                b'"spec":{"leaseDurationSeconds":true}}'
            ),
            "answered with a Lease we cannot read: leaseDurationSeconds is not an integer",
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nnot ready",
            "GET lease: HTTP 503: not ready",
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * (1024 * 1024 + 1),
            "response body over 1048576 bytes",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "not-http",
        "not-a-lease",
        "no-rv",
        "bad-time",
        "bool",
        "503",
        "big",
    ],
)
def test_bad_responses(response: bytes, expected: str) -> None:
    with TlsScriptedPeer(response) as scripted:
        client = LeaseClient(creds_for(scripted.port, scripted.pair.ca_pem), timeout=5)
        error = refusal(client.get, NS, NAME)
        request = scripted.requests[0].decode()
    assert expected in str(error)
    assert re.match(
        r"GET /apis/coordination\.k8s\.io/v1/namespaces/kube-system/leases/kube-", request
    )
    assert "Connection: close" in request and f"Authorization: Bearer {TOKEN}" in request


def test_a_client_certificate_from_another_ca_is_refused(
    peer: ApiserverPeer, tmp_path: Path
) -> None:
    creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, user="node-a")))
    with ApiserverPeer() as other:
        foreign = other.client_ca.issue("node-a")
    client = LeaseClient(
        dataclasses.replace(creds, client_cert_pem=foreign.cert_pem, client_key_pem=foreign.key_pem)
    )
    # The stand-in refuses it in TLS (kube-apiserver would answer 401): the
    # alert or the closed connection reaches the client in whichever phase.
    message = str(refusal(client.get, NS, NAME))
    assert re.search(
        r"TLS handshake failed: |TLS failed during (request|response): "
        r"|connection (reset|closed) by peer during",
        message,
    )
    assert peer.log == []


def test_system_cas_when_the_kubeconfig_names_none(peer: ApiserverPeer, tmp_path: Path) -> None:
    creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, token=TOKEN)))
    client = LeaseClient(dataclasses.replace(creds, ca_pem=None), timeout=5)
    assert "TLS verification of the server failed" in str(refusal(client.get, NS, NAME))


def test_name_resolution_is_bounded() -> None:
    creds = dataclasses.replace(creds_for(443), server="https://kube-loopback-guard.invalid")
    error, elapsed = timed_refusal(LeaseClient(creds, timeout=DEADLINE))
    assert "cannot resolve 'kube-loopback-guard.invalid'" in str(error) or "timed out" in str(error)
    assert elapsed < DEADLINE + SLACK


def test_timeout_must_be_positive(peer: ApiserverPeer, tmp_path: Path) -> None:
    creds = load_kubeconfig(str(peer.kubeconfig(tmp_path, token=TOKEN)))
    with pytest.raises(ValueError, match="positive"):
        LeaseClient(creds, timeout=0)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"server": "https://bücher.example:6443"}, id="server"),
        pytest.param({"tls_server_name": "bücher.example"}, id="sni"),
        pytest.param({"tls_server_name": "a\x00b"}, id="nul"),
        pytest.param({"token": "t\r\nX-Injected: 1"}, id="token"),
    ],
)
def test_names_the_wire_cannot_carry_are_lease_errors(changes: Dict[str, str]) -> None:
    # load_kubeconfig refuses these; credentials built otherwise still end as
    # LeaseError, never UnicodeError or ValueError.
    with SilentPeer() as peer:
        creds = dataclasses.replace(creds_for(peer.port), **changes)
        with pytest.raises(LeaseError):
            LeaseClient(creds, timeout=DEADLINE).get(NS, NAME)
