"""What a stand-in kube-apiserver answers, as default RBAC lets an
unauthenticated client see it.

kube-apiserver authenticates, then authorizes, then routes. Without
credentials a client is `system:anonymous` (or gets 401 with
`--anonymous-auth=false`); ClusterRole `system:public-info-viewer` lets it
`get` exactly `/livez`, `/readyz`, `/healthz`, `/version` and `/version/`,
whatever the query; anything else is 403, whether or not the path exists. The
health endpoints answer as upstream's healthz handler writes them.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = ["LOOPBACK_CHECK", "answer"]

LOOPBACK_CHECK = "loopback-serving-certificate"

# What system:public-info-viewer grants system:unauthenticated (verb get).
_PUBLIC_PATHS = frozenset(("/livez", "/readyz", "/healthz", "/version", "/version/"))

# A v1.36 kube-apiserver's checks, abridged; ours sits among the livez checks.
_LIVEZ_CHECKS = (
    "ping",
    "log",
    "etcd",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/start-apiextensions-controllers",
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/apiservice-registration-controller",
)
_READYZ_CHECKS = ("informer-sync", "etcd-readiness", "shutdown")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
}

_UNAUTHORIZED_BODY = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    '"message":"Unauthorized","reason":"Unauthorized","code":401}\n'
)
_FORBIDDEN_BODY = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    '"message":"forbidden: User \\"system:anonymous\\" cannot %s path \\"%s\\"",'
    '"reason":"Forbidden","details":{},"code":403}\n'
)


def answer(
    head: bytes, *, anonymous_auth: bool, loopback_check: Optional[bool], ready: bool
) -> Tuple[Optional[str], bytes]:
    """Given a request head, whether anonymous requests are allowed, the state
    of the loopback-serving-certificate check (None: the apiserver predates
    it) and whether /readyz passes, return the request target (None for a bad
    request line) and the whole response."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, _response(400, "text/plain; charset=utf-8", "400 Bad Request", "GET")
    method, target, _version = parts
    path, _, query = target.partition("?")
    if not anonymous_auth:
        return target, _response(401, "application/json", _UNAUTHORIZED_BODY, method)
    # RBAC's verb is the method in lower case: HEAD is not get.
    if method != "GET" or path not in _PUBLIC_PATHS:
        body = _FORBIDDEN_BODY % (method.lower(), path)
        return target, _response(403, "application/json", body, method)
    verbose = "verbose" in query.split("&")
    if path in ("/livez", "/healthz"):
        checks = [(name, True) for name in _LIVEZ_CHECKS]
        if loopback_check is not None:
            checks.insert(3, (LOOPBACK_CHECK, loopback_check))
        return target, _health(path.lstrip("/"), checks, verbose)
    if path == "/readyz":
        checks = [(name, True) for name in _LIVEZ_CHECKS + _READYZ_CHECKS]
        if not ready:
            checks[2] = ("etcd", False)
        return target, _health("readyz", checks, verbose)
    minor = "35" if loopback_check is None else "36"
    version = f'{{"major":"1","minor":"{minor}","gitVersion":"v1.{minor}.0"}}\n'
    return target, _response(200, "application/json", version, method)


def _health(name: str, checks: List[Tuple[str, bool]], verbose: bool) -> bytes:
    """Given an endpoint's name, its checks and whether ?verbose was asked,
    return its answer as upstream's healthz handler writes it: one line per
    check, "[+]NAME ok" or "[-]NAME failed: reason withheld" (the reason is
    for the log only), 500 when any fails (always verbose then), else "ok"."""
    lines = "".join(
        f"[+]{check} ok\n" if passed else f"[-]{check} failed: reason withheld\n"
        for check, passed in checks
    )
    text = "text/plain; charset=utf-8"
    if not all(passed for _, passed in checks):
        return _response(500, text, f"{lines}{name} check failed\n", "GET")
    if verbose:
        return _response(200, text, f"{lines}{name} check passed\n", "GET")
    return _response(200, text, "ok", "GET")


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
