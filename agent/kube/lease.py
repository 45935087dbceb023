"""A cluster-wide lock on a coordination.k8s.io/v1 Lease, and its client.

At most one control-plane node restarts its apiserver at a time. The lock is
the same kind of object Kubernetes' own leader election uses, and the rules are
the same: create the Lease, or take it over with an update carrying the
`resourceVersion` just read once the holder has let it lapse; the API server
answers 409 to every writer but the first, so among racing agents exactly one
wins. A lease left by a dead agent expires by itself.

Whether another holder's lease has lapsed is judged as client-go's leader
election does: not by comparing its `renewTime` (the holder's wall clock) with
ours, but by how long the record has been seen unchanged on this process's
monotonic clock. A holder is live until the record stayed the same for
`leaseDurationSeconds` after we first saw it; so a process that has just
started (a hand-run `restart`) never takes over another holder's lease, and
the daemon, which keeps watching, takes a dead holder's lease one duration
after it stopped renewing. Clock skew between masters plays no part.

`current_holder` and `lease_is_free` are the pure decision; `Lease` applies it
through a `LeaseClient` (`agent.kube.lease_client`), which makes the calls.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Optional, Protocol, Tuple

from agent.timefmt import format_rfc3339, parse_rfc3339

__all__ = [
    "Lease",
    "LeaseConflict",
    "LeaseError",
    "LeaseRecord",
    "LeaseSpec",
    "current_holder",
    "format_micro_time",
    "lease_is_free",
    "parse_micro_time",
]


class LeaseError(Exception):
    """The API server could not be asked, or refused; `status` is the HTTP
    status when there was one, `reason` the Kubernetes Status reason."""

    def __init__(
        self, message: str, status: Optional[int] = None, reason: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class LeaseConflict(LeaseError):
    """Someone else wrote the Lease first (409 AlreadyExists or Conflict)."""


# -- the records ---------------------------------------------------------------


@dataclass(frozen=True)
class LeaseSpec:
    """The spec of a coordination.k8s.io/v1 Lease (times aware UTC)."""

    holder_identity: Optional[str] = None  # None also for "" on the wire
    lease_duration_seconds: Optional[int] = None
    acquire_time: Optional[datetime] = None
    renew_time: Optional[datetime] = None
    lease_transitions: int = 0

    def expires_at(self) -> Optional[datetime]:
        """Return renewTime + leaseDurationSeconds, or None when either is unset."""
        if self.renew_time is None or self.lease_duration_seconds is None:
            return None
        return self.renew_time + timedelta(seconds=self.lease_duration_seconds)


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read from the API server."""

    namespace: str
    name: str
    resource_version: str
    spec: LeaseSpec
    # The object as served: an update writes it back with only our spec fields
    # changed, so labels, annotations and newer spec fields survive.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def format_micro_time(moment: datetime) -> str:
    """Given an aware datetime, return it as a Kubernetes MicroTime
    (`2026-11-29T12:00:00.000000Z`). Raise ValueError if it is naive."""
    return format_rfc3339(moment, fraction="micro")


def parse_micro_time(text: str) -> datetime:
    """Given an RFC 3339 time (MicroTime or Time, any fraction), return it as an
    aware UTC datetime. Raise ValueError if it is not one."""
    return parse_rfc3339(text)


# -- the decision --------------------------------------------------------------


def current_holder(
    record: Optional[LeaseRecord], unchanged_for: float, identity: Optional[str] = None
) -> Optional[str]:
    """Given a Lease (None when there is none), for how many seconds this
    process has seen that same record unchanged (on its monotonic clock), and
    our identity, return who holds it now: holderIdentity until the record has
    stayed unchanged for leaseDurationSeconds, else None. Our own lease is ours
    whatever its age. A lease that does not say how long it lasts holds
    nothing, so a malformed one can never lock the cluster for good.
    """
    if record is None or not record.spec.holder_identity:
        return None
    if record.spec.holder_identity == identity:
        return identity
    seconds = record.spec.lease_duration_seconds
    if seconds is None or unchanged_for >= seconds:
        return None
    return record.spec.holder_identity


def lease_is_free(record: Optional[LeaseRecord], identity: str, unchanged_for: float) -> bool:
    """Given a Lease (or None), our identity and for how long the record has
    been seen unchanged, return whether we may hold it: nobody holds it, or we do."""
    return current_holder(record, unchanged_for, identity) in (None, identity)


# -- the lock ------------------------------------------------------------------


class LeaseCalls(Protocol):
    """The three Lease calls `Lease` makes; `agent.kube.lease_client.LeaseClient`
    makes them against an API server (named here, not imported: the client
    builds on this module's records)."""

    def get(self, namespace: str, name: str) -> Optional[LeaseRecord]: ...

    def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord: ...

    def update(self, record: LeaseRecord) -> LeaseRecord: ...


class Lease:
    """One Lease used as a lock: acquire, renew while working, release.

    Each method reads the Lease, then writes at most once, so it takes at most
    twice the client's timeout; it raises LeaseError when the API server cannot
    be asked. `now` (aware) is what it writes as acquireTime and renewTime;
    `monotonic` is how it judges another holder: it remembers the last record
    it read and when that record first appeared (client-go's observedTime).
    """

    def __init__(
        self,
        client: LeaseCalls,
        namespace: str,
        name: str,
        duration: timedelta,
        identity: Optional[str] = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        seconds = int(duration.total_seconds())
        if seconds < 1:
            raise ValueError("the lease duration must be at least one second")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.duration_seconds = seconds
        self.identity = identity if identity is not None else socket.gethostname()
        if not self.identity:
            raise ValueError("the lease holder identity must not be empty")
        self.monotonic = monotonic
        self._observed: Optional[Tuple[Tuple[object, ...], float]] = None

    def __str__(self) -> str:
        return f"Lease {self.namespace}/{self.name} for {self.identity} ({self.duration_seconds}s)"

    def acquire(self, now: datetime) -> bool:
        """Given the current time, take the lock (or keep it, if ours) and
        return True; return False if another live holder has it or another
        writer got there first."""
        _require_aware(now)
        record = self._read()
        if record is not None and record.spec.holder_identity == self.identity:
            return self._write(record, self._renewed(record, now))
        if not lease_is_free(record, self.identity, self.unchanged_for(record)):
            return False
        transitions = record.spec.lease_transitions + 1 if record is not None else 0
        return self._write(
            record, LeaseSpec(self.identity, self.duration_seconds, now, now, transitions)
        )

    def renew(self, now: datetime) -> bool:
        """Given the current time, move renewTime to now and return True if the
        lock is still ours; return False if it is not (taken, released, gone)."""
        _require_aware(now)
        record = self._read()
        if record is None or record.spec.holder_identity != self.identity:
            return False
        return self._write(record, self._renewed(record, now))

    def release(self, now: datetime) -> None:
        """Given the current time, clear the holder if the lock is ours; keep
        the object, so its leaseTransitions history stays. Do nothing otherwise."""
        _require_aware(now)
        record = self._read()
        if record is not None and record.spec.holder_identity == self.identity:
            self._write(record, replace(record.spec, holder_identity=None, renew_time=now))

    def holder(self) -> Optional[str]:
        """Return who holds the lock now (us included), or None."""
        record = self._read()
        return current_holder(record, self.unchanged_for(record), self.identity)

    def unchanged_for(self, record: Optional[LeaseRecord]) -> float:
        """Given the record just read, return for how many seconds of this
        process's monotonic clock it has been seen unchanged (0 when new)."""
        if record is None or self._observed is None or self._observed[0] != _key(record):
            return 0.0
        return self.monotonic() - self._observed[1]

    def _read(self) -> Optional[LeaseRecord]:
        record = self.client.get(self.namespace, self.name)
        if record is not None and (self._observed is None or self._observed[0] != _key(record)):
            self._observed = (_key(record), self.monotonic())
        return record

    def _renewed(self, record: LeaseRecord, now: datetime) -> LeaseSpec:
        return replace(record.spec, renew_time=now, lease_duration_seconds=self.duration_seconds)

    def _write(self, record: Optional[LeaseRecord], spec: LeaseSpec) -> bool:
        """Create the Lease (no record) or update the one read; return False
        when another writer got there first."""
        try:
            if record is None:
                stored = self.client.create(self.namespace, self.name, spec)
            else:
                stored = self.client.update(replace(record, spec=spec))
        except LeaseConflict:
            return False
        self._observed = (_key(stored), self.monotonic())
        return True


def _key(record: LeaseRecord) -> Tuple[object, ...]:
    """What makes a record "changed": any write moves resourceVersion; the
    spec too, for servers that would not."""
    return (record.resource_version, record.spec)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the time must be timezone-aware")
