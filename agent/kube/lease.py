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

`current_holder` and `lease_is_free` are the pure decision; `Lease` applies it;
`LeaseClient` makes the Lease calls to the API server named in a kubeconfig,
over `agent.kubeapi` (verified TLS, one deadline per call), and says what a
refusal means.

RBAC
----
A user with a Role like this one can hold the lock (admin.conf's
cluster-admin needs none). `create` cannot be limited to one name, since the
name is in the body, not the URL::

    apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata:
      name: kube-loopback-guard
      namespace: kube-system
    rules:
    - apiGroups: ["coordination.k8s.io"]
      resources: ["leases"]
      verbs: ["create"]
    - apiGroups: ["coordination.k8s.io"]
      resources: ["leases"]
      resourceNames: ["kube-loopback-guard"]
      verbs: ["get", "update"]
    ---
    apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata:
      name: kube-loopback-guard
      namespace: kube-system
    roleRef:
      apiGroup: rbac.authorization.k8s.io
      kind: Role
      name: kube-loopback-guard
    subjects:
    - apiGroup: rbac.authorization.k8s.io
      kind: User
      name: kube-loopback-guard   # the CN of the agent's client certificate

A kubeconfig for that user: `kubeadm kubeconfig user --client-name
kube-loopback-guard` on a control-plane node.
"""

from __future__ import annotations

import copy
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from agent.kube.api import KubeApiClient, KubeApiError, printable
from agent.kube.kubeconfig import ApiCredentials
from agent.text import one_line
from agent.timefmt import format_rfc3339, parse_rfc3339

__all__ = [
    "Lease",
    "LeaseClient",
    "LeaseConflict",
    "LeaseError",
    "LeaseRecord",
    "LeaseSpec",
    "current_holder",
    "format_micro_time",
    "lease_is_free",
    "parse_micro_time",
]

_API = "/apis/coordination.k8s.io/v1"
_RBAC_HINT = (
    "the agent's user needs get, create and update on leases.coordination.k8s.io "
    "in namespace {namespace} (see RBAC in the README)"
)


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
        client: LeaseClient,
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


# -- the client ----------------------------------------------------------------


class LeaseClient:
    """The three Lease calls (get, create, update) against the API server of
    a kubeconfig context; each call is one connection and one deadline."""

    def __init__(self, credentials: ApiCredentials, *, timeout: float = 10.0) -> None:
        """Given credentials and a per-call timeout in seconds, return a client.
        Raise LeaseError if the CA, client certificate or key cannot be loaded."""
        self.credentials = credentials
        self.timeout = timeout
        try:
            self._api = KubeApiClient(credentials, timeout=timeout)
        except KubeApiError as exc:
            raise LeaseError(str(exc)) from None

    def __repr__(self) -> str:
        return f"LeaseClient(server={self.credentials.server!r}, timeout={self.timeout!r})"

    def get(self, namespace: str, name: str) -> Optional[LeaseRecord]:
        """Given a namespace and name, return the Lease, or None if there is none.
        Raise LeaseError on any other failure."""
        status, document = self._call("GET", _path(namespace, name), None, "get", namespace)
        if status == 404:
            return None
        return _record(document, self.credentials.server)

    def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        """Given a namespace, name and spec, create the Lease and return it as
        stored. Raise LeaseConflict if it exists, LeaseError on other failures."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": _spec_fields(spec, {}),
        }
        _status, document = self._call("POST", _path(namespace), body, "create", namespace)
        return _record(document, self.credentials.server)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Given a record carrying the resourceVersion it was read at, write
        its spec and return the Lease as stored. Raise LeaseConflict if the
        Lease changed (or vanished) since, LeaseError on other failures."""
        body = copy.deepcopy(dict(record.raw))
        metadata = body.setdefault("metadata", {})
        metadata.update(
            name=record.name, namespace=record.namespace, resourceVersion=record.resource_version
        )
        body.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
        body["spec"] = _spec_fields(record.spec, body.get("spec") or {})
        path = _path(record.namespace, record.name)
        _status, document = self._call("PUT", path, body, "update", record.namespace)
        return _record(document, self.credentials.server)

    def _call(
        self, method: str, path: str, body: Optional[Dict[str, Any]], verb: str, namespace: str
    ) -> Tuple[int, Dict[str, Any]]:
        try:
            status, document = self._api.request(method, path, body)
        except KubeApiError as exc:
            raise LeaseError(str(exc)) from None
        if 200 <= status < 300 or (status == 404 and verb == "get"):
            return status, document
        raise self._refusal(status, document, method, verb, namespace)

    def _refusal(
        self, status: int, document: Dict[str, Any], method: str, verb: str, namespace: str
    ) -> LeaseError:
        server = self.credentials.server
        message = printable(str(document.get("message") or ""))
        reason = document.get("reason") if isinstance(document.get("reason"), str) else None
        said = f": {message}" if message else ""
        rbac = _RBAC_HINT.format(namespace=namespace)
        where = f"{self.credentials.kubeconfig} context {self.credentials.context}"
        if status == 409 or (status == 404 and verb == "update"):
            return LeaseConflict(f"{server}: {verb} lease: HTTP {status}{said}", status, reason)
        if status == 401:
            return LeaseError(
                f"{server}: HTTP 401 Unauthorized{said}: the server rejected the "
                f"{self.credentials.auth} of {where} (expired, or another cluster's?); "
                f"once accepted, {rbac}",
                status,
                reason,
            )
        if status == 403:
            return LeaseError(
                f"{server}: HTTP 403 Forbidden{said}: the user of {where} may not {verb} "
                f"leases.coordination.k8s.io in namespace {namespace}; {rbac}",
                status,
                reason,
            )
        return LeaseError(f"{server}: {method} lease: HTTP {status}{said}", status, reason)


def _path(namespace: str, name: Optional[str] = None) -> str:
    path = f"{_API}/namespaces/{quote(namespace, safe='')}/leases"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _spec_fields(spec: LeaseSpec, base: Mapping[str, Any]) -> Dict[str, Any]:
    fields: Dict[str, Any] = dict(base)
    values = {
        "holderIdentity": spec.holder_identity or None,
        "leaseDurationSeconds": spec.lease_duration_seconds,
        "acquireTime": spec.acquire_time and format_micro_time(spec.acquire_time),
        "renewTime": spec.renew_time and format_micro_time(spec.renew_time),
        "leaseTransitions": spec.lease_transitions,
    }
    for key, value in values.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def _record(document: Dict[str, Any], server: str) -> LeaseRecord:
    """Read a Lease from the server's JSON; raise LeaseError saying what is off."""
    metadata = document.get("metadata")
    spec = document.get("spec") or {}
    try:
        if document.get("kind") != "Lease" or not isinstance(metadata, dict):
            raise ValueError("not a Lease")
        if not isinstance(spec, dict):
            raise ValueError("spec is not an object")
        return LeaseRecord(
            namespace=_field(metadata, "namespace", str),
            name=_field(metadata, "name", str),
            resource_version=_field(metadata, "resourceVersion", str),
            spec=LeaseSpec(
                # Anyone who may update the Lease chooses it; it is shown.
                holder_identity=one_line(_optional(spec, "holderIdentity", str) or "") or None,
                lease_duration_seconds=_optional(spec, "leaseDurationSeconds", int),
                acquire_time=_optional_time(spec, "acquireTime"),
                renew_time=_optional_time(spec, "renewTime"),
                lease_transitions=_optional(spec, "leaseTransitions", int) or 0,
            ),
            raw=document,
        )
    except ValueError as exc:
        raise LeaseError(f"{server}: answered with a Lease we cannot read: {exc}") from None


def _field(mapping: Mapping[str, Any], key: str, kind: type) -> Any:
    value = _optional(mapping, key, kind)
    if value is None or value == "":
        raise ValueError(f"{key} is missing")
    return value


def _optional(mapping: Mapping[str, Any], key: str, kind: type) -> Any:
    value = mapping.get(key)
    # bool is an int to Python, not to the API.
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"{key} is not {'a string' if kind is str else 'an integer'}")
    return value


def _optional_time(mapping: Mapping[str, Any], key: str) -> Optional[datetime]:
    text = _optional(mapping, key, str)
    return parse_micro_time(text) if text else None


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the time must be timezone-aware")
