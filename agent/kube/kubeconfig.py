"""Read a kubeconfig: which API server to talk to, and as whom.

The agent needs one thing from a kubeconfig: the server of one context, how to
verify it and how to authenticate, as `ApiCredentials`. The file is YAML (or
JSON, which is YAML too), read with PyYAML's `safe_load`, imported only when a
kubeconfig is read. A file that is not valid YAML is reported by line and
column only: a kubeconfig holds keys, so no error quotes it.

Semantics follow client-go's clientcmd where it matters: the current context
unless one is named; `*-data` (base64) or a file path, relative paths taken
from the kubeconfig's directory; `token` before `tokenFile`. Exec and
auth-provider plugins, basic auth, impersonation and proxies are refused with
a clear message. No error message or repr ever contains a key or a token.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["ApiCredentials", "KubeconfigError", "load_kubeconfig"]

# Far above any real kubeconfig (a few KiB; a few hundred with many clusters).
_MAX_SIZE = 16 * 1024 * 1024


class KubeconfigError(Exception):
    """A kubeconfig that cannot be used, with the file and what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class ApiCredentials:
    """An API server and how to reach it, from one context of a kubeconfig."""

    kubeconfig: str
    context: str
    server: str  # https://host[:port][/prefix], without a trailing slash
    ca_pem: Optional[bytes] = field(default=None, repr=False)  # None: the system's CAs
    insecure: bool = False  # insecure-skip-tls-verify
    client_cert_pem: Optional[bytes] = field(default=None, repr=False)
    client_key_pem: Optional[bytes] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)
    tls_server_name: Optional[str] = None

    @property
    def auth(self) -> str:
        """How the agent authenticates, in words for messages."""
        return "client certificate" if self.client_cert_pem is not None else "bearer token"


def load_kubeconfig(path: str, context: Optional[str] = None) -> ApiCredentials:
    """Given a kubeconfig path and optionally a context name, return the server
    and credentials of that context (else of current-context).

    Raise KubeconfigError naming the file and the key path (for example
    `users[0].user.client-key-data: not valid base64`) if the file cannot be
    read, is not YAML, lacks a needed key, or asks for something the agent
    does not support; never another exception, whatever the file holds.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_SIZE + 1)
    except (OSError, ValueError) as exc:
        # ValueError: a NUL in the path.
        raise KubeconfigError(
            path, f"cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if len(data) > _MAX_SIZE:
        raise KubeconfigError(
            path, f"larger than {_MAX_SIZE // (1024 * 1024)} MiB: not a kubeconfig"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KubeconfigError(path, "not UTF-8 text") from None
    document = _parse(path, text)
    if document is None:
        raise KubeconfigError(path, "empty")
    try:
        return _Reader(path).credentials(document, context)
    except RecursionError:
        raise KubeconfigError(path, "nested too deeply: not a kubeconfig") from None


def _parse(path: str, text: str) -> Any:
    """Given a kubeconfig's text, return its document. Raise KubeconfigError
    with the line and column (never the text) if it is not YAML."""
    try:
        import yaml
    except ImportError:
        raise KubeconfigError(
            path, "reading a kubeconfig needs PyYAML (python3-yaml, python3-pyyaml)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise KubeconfigError(path, f"not valid YAML{where}") from None
    except yaml.YAMLError:
        raise KubeconfigError(path, "not valid YAML") from None
    except RecursionError:
        raise KubeconfigError(path, "nested too deeply: not a kubeconfig") from None


# -- the kubeconfig's meaning --------------------------------------------------


class _Reader:
    """Walks a parsed kubeconfig, naming the key path in every error."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))

    def error(self, where: str, message: str) -> KubeconfigError:
        return KubeconfigError(self.path, f"{where}: {message}" if where else message)

    def credentials(self, document: Any, context: Optional[str]) -> ApiCredentials:
        root = self.mapping(document, "")
        kind = root.get("kind")
        if kind is not None and kind != "Config":
            raise self.error("kind", f"is {kind!r}, not 'Config': not a kubeconfig")
        context_name = context or self.string(root, "current-context", "")
        if not context_name:
            raise self.error("current-context", "not set; name the context to use")
        where, entry = self.named(root, "contexts", "context", context_name)
        cluster_name = self.string(entry, "cluster", where, required=True)
        user_name = self.string(entry, "user", where, required=True)
        cluster_where, cluster = self.named(root, "clusters", "cluster", str(cluster_name))
        user_where, user = self.named(root, "users", "user", str(user_name))
        server = self.server(cluster, cluster_where)
        ca_pem = self.blob(cluster, "certificate-authority", cluster_where)
        insecure = self.boolean(cluster, "insecure-skip-tls-verify", cluster_where)
        if insecure and ca_pem is not None:
            raise self.error(
                f"{cluster_where}.insecure-skip-tls-verify",
                "true together with a certificate authority; keep one",
            )
        if cluster.get("proxy-url") is not None:
            raise self.error(f"{cluster_where}.proxy-url", "proxies are not supported")
        cert_pem, key_pem, token = self.user(user, user_where)
        return ApiCredentials(
            kubeconfig=self.path,
            context=context_name,
            server=server,
            ca_pem=ca_pem,
            insecure=insecure,
            client_cert_pem=cert_pem,
            client_key_pem=key_pem,
            token=token,
            tls_server_name=self.server_name(cluster, cluster_where),
        )

    def server_name(self, cluster: Dict[str, Any], where: str) -> Optional[str]:
        name = self.string(cluster, "tls-server-name", where)
        if name is not None and not _HOST_NAME.fullmatch(name):
            raise self.error(
                f"{where}.tls-server-name", f"{name!r} is not a host name in ASCII (xn-- form)"
            )
        return name

    def user(
        self, user: Dict[str, Any], where: str
    ) -> Tuple[Optional[bytes], Optional[bytes], Optional[str]]:
        for key, what in _UNSUPPORTED_USER_KEYS:
            if user.get(key) is not None:
                raise self.error(
                    f"{where}.{key}",
                    f"{what} is not supported; use a kubeconfig whose user has a "
                    "client certificate or a token",
                )
        cert_pem = self.blob(user, "client-certificate", where)
        key_pem = self.blob(user, "client-key", where)
        if (cert_pem is None) != (key_pem is None):
            present, missing = (
                ("client-certificate", "client-key")
                if key_pem is None
                else ("client-key", "client-certificate")
            )
            raise self.error(where, f"has a {present} but no {missing}(-data)")
        token = self.string(user, "token", where)
        token_where = f"{where}.token"
        if not token:
            token_file = self.string(user, "tokenFile", where)
            if token_file:
                token_where = f"{where}.tokenFile"
                token = self.read(token_file, token_where).decode("utf-8", "replace").strip()
                if not token:
                    raise self.error(token_where, "the file is empty")
        if token and not _TOKEN.fullmatch(token):
            # Said without the token itself, which must never reach a log.
            raise self.error(token_where, "contains whitespace or control characters")
        if cert_pem is None and not token:
            raise self.error(where, "has no client certificate and no token")
        return cert_pem, key_pem, token or None

    def server(self, cluster: Dict[str, Any], where: str) -> str:
        server = self.string(cluster, "server", where, required=True)
        assert server is not None
        try:
            url = urlsplit(server)
            _ = url.port  # raises ValueError for a port that is not a number
        except ValueError as exc:
            raise self.error(f"{where}.server", f"not a valid URL: {exc}") from None
        if url.scheme != "https":
            raise self.error(
                f"{where}.server", f"{server!r} is not https://; the agent verifies the server"
            )
        if not url.hostname or url.username or url.query or url.fragment:
            raise self.error(f"{where}.server", f"{server!r} is not an https://host[:port] URL")
        if not _URL.fullmatch(server):
            raise self.error(
                f"{where}.server",
                f"{server!r} is not plain ASCII; write an international host name in its xn-- form",
            )
        return server.rstrip("/")

    def blob(self, mapping: Dict[str, Any], key: str, where: str) -> Optional[bytes]:
        """Return `key-data` (base64) or the file `key` names, checked to be PEM."""
        encoded = self.string(mapping, f"{key}-data", where)
        file_name = self.string(mapping, key, where)
        if encoded and file_name:
            raise self.error(where, f"both {key} and {key}-data are set; keep one")
        if encoded:
            data_where = f"{where}.{key}-data"
            try:
                data = base64.b64decode(re.sub(r"\s+", "", encoded), validate=True)
            except (binascii.Error, ValueError):
                raise self.error(data_where, "not valid base64") from None
        elif file_name:
            data_where = f"{where}.{key}"
            data = self.read(file_name, data_where)
        else:
            return None
        pem_begin, what = _PEM_SHAPES[key]
        if not pem_begin.search(data):
            raise self.error(data_where, f"not {what} in PEM format")
        return data

    def read(self, file_name: str, where: str) -> bytes:
        resolved = os.path.join(self.directory, file_name)
        try:
            with open(resolved, "rb") as handle:
                data = handle.read(_MAX_SIZE + 1)
        except (OSError, ValueError) as exc:
            # ValueError: a NUL in the name.
            detail = getattr(exc, "strerror", None) or exc
            raise self.error(where, f"cannot read {resolved}: {detail}") from None
        if len(data) > _MAX_SIZE:
            raise self.error(where, f"{resolved} is larger than {_MAX_SIZE >> 20} MiB")
        return data

    def named(
        self, root: Dict[str, Any], list_key: str, item_key: str, name: str
    ) -> Tuple[str, Dict[str, Any]]:
        """Return the key path and the mapping of `list_key[i].item_key` named `name`."""
        items = root.get(list_key)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise self.error(list_key, "must be a list")
        names: List[str] = []
        for index, item in enumerate(items):
            where = f"{list_key}[{index}]"
            entry = self.mapping(item, where)
            item_name = self.string(entry, "name", where, required=True)
            if item_name == name:
                return f"{where}.{item_key}", self.mapping(
                    entry.get(item_key), f"{where}.{item_key}"
                )
            names.append(str(item_name))
        known = ", ".join(repr(n) for n in names) if names else "none"
        raise self.error(list_key, f"no entry named {name!r} (there are: {known})")

    def mapping(self, value: Any, where: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(where, "must be a mapping")
        return value

    def string(
        self, mapping: Dict[str, Any], key: str, where: str, *, required: bool = False
    ) -> Optional[str]:
        value = mapping.get(key)
        key_path = f"{where}.{key}" if where else key
        if value is None or value == "":
            if required:
                raise self.error(key_path, "missing")
            return None
        if not isinstance(value, str):
            raise self.error(key_path, "must be a string")
        return value

    def boolean(self, mapping: Dict[str, Any], key: str, where: str) -> bool:
        value = mapping.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        # YAML 1.1 booleans, as the YAML library under client-go reads them.
        if isinstance(value, str) and value.lower() in _TRUE:
            return True
        if isinstance(value, str) and value.lower() in _FALSE:
            return False
        raise self.error(f"{where}.{key}", "must be true or false")


_TRUE = frozenset(("true", "yes", "y", "on"))
_FALSE = frozenset(("false", "no", "n", "off"))
_TOKEN = re.compile(r"[\x21-\x7e]+")
_URL = re.compile(r"[\x21-\x7e]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PEM_SHAPES = {
    "certificate-authority": (_PEM_CERTIFICATE, "a certificate"),
    "client-certificate": (_PEM_CERTIFICATE, "a certificate"),
    "client-key": (re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
}
_UNSUPPORTED_USER_KEYS = (
    ("exec", "an exec credential plugin"),
    ("auth-provider", "an auth-provider plugin"),
    ("username", "basic authentication"),
    ("password", "basic authentication"),
    ("as", "impersonation"),
    ("as-groups", "impersonation"),
    ("as-uid", "impersonation"),
    ("as-user-extra", "impersonation"),
)
