"""`LeaseClient`: the Lease calls (get, create, update) to the API server named
in a kubeconfig, over `agent.kube.api` (verified TLS, one deadline per call),
and what a refusal means.

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
from datetime import datetime
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from agent.kube.api import KubeApiClient, KubeApiError, printable
from agent.kube.kubeconfig import ApiCredentials
from agent.kube.lease import (
    LeaseConflict,
    LeaseError,
    LeaseRecord,
    LeaseSpec,
    format_micro_time,
    parse_micro_time,
)
from agent.text import one_line

__all__ = ["LeaseClient"]

_API = "/apis/coordination.k8s.io/v1"
_RBAC_HINT = (
    "the agent's user needs get, create and update on leases.coordination.k8s.io "
    "in namespace {namespace} (see RBAC in the README)"
)


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
