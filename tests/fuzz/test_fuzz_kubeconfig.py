"""Fuzz: kubeconfig file → load_kubeconfig → one request with what it gave.

Written against the public reader (`load_kubeconfig(path, context)`), so it
holds whichever YAML parser sits behind it. Property: a file gives
ApiCredentials or a KubeconfigError; credentials give a client and a request
that fail, if they fail, only with KubeApiError. Servers are 127.0.0.1 / ::1
on a closed port, or names that cannot be resolved (non-ASCII, junk): the
resolver is fenced (below) so no name ever leaves this machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock

from apiserver_peer import ClientCa
from faulty_peers import closed_port
from fuzzing import inputs
from hypothesis import event, given
from hypothesis import strategies as st

from agent.kube.api import KubeApiClient, KubeApiError
from agent.kube.kubeconfig import KubeconfigError, load_kubeconfig

_CA = ClientCa()
_CLIENT = _CA.issue("system:node:fuzz")
_PORT = closed_port()
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    # Not a mock of what we test: the fence that keeps fuzzed host names off
    # the network (tests may only talk to 127.0.0.1 and ::1).
    name = host.decode() if isinstance(host, bytes) else host
    if name not in _LOOPBACK:
        raise socket.gaierror(socket.EAI_NONAME, "fenced by the fuzz harness")
    return _real_getaddrinfo(host, *args, **kwargs)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_text = st.text(max_size=20)
_junk = st.one_of(_text, st.integers(), st.booleans(), st.none(), st.just({}), st.just([]))
_hosts = st.sampled_from(
    ["127.0.0.1", "[::1]", "localhost", "bücher.example", "ü", "a b", "%zz", "[::1", "", "x" * 300]
)
_servers = st.one_of(
    st.builds(
        "https://{}:{}{}".format,
        _hosts,
        st.sampled_from([str(_PORT), "0", "99999", "x", ""]),
        st.sampled_from(["", "/", "/prefix", "?q", "#f"]),
    ),
    st.sampled_from(["http://127.0.0.1:1", "https://user@127.0.0.1:1", "127.0.0.1"]),
    _text,
)
_blob_data = st.sampled_from(
    [_b64(_CA.ca_pem), _b64(b"-----BEGIN CERTIFICATE-----\nnot base64\n"), "!!", "", "AAAA"]
)


_CLUSTER_KEYS: Dict[str, st.SearchStrategy[Any]] = {
    "server": _servers,
    "certificate-authority-data": _blob_data,
    "certificate-authority": st.sampled_from(["ca.crt", "missing.crt", "../ca.crt", "/dev/null"]),
    "insecure-skip-tls-verify": st.sampled_from([True, False, "yes", "off", "maybe"]),
    "tls-server-name": st.sampled_from(["kubernetes", "ü", ""]),
    "proxy-url": st.just("http://127.0.0.1:3128"),
}
_USER_KEYS: Dict[str, st.SearchStrategy[Any]] = {
    "client-certificate-data": st.sampled_from([_b64(_CLIENT.cert_pem), _b64(_CA.ca_pem), "%%%"]),
    "client-key-data": st.sampled_from(
        [_b64(_CLIENT.key_pem), _b64(b"-----BEGIN PRIVATE KEY-----\n")]
    ),
    "token": st.sampled_from(["abc.def", "with space", "tab\t", "ü", ""]),
    "tokenFile": st.sampled_from(["token", "missing", ""]),
    "exec": st.just({"command": "/bin/true"}),
    "username": st.just("admin"),
}
_names = st.sampled_from(["kubernetes", "admin", "ctx", "", "ü"])
_TOP_KEYS: Dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from(["Config", "Pod", ""]),
    "current-context": _names,
    "clusters": st.just([]),
    "contexts": st.just({}),
    "users": st.just("x"),
}


@st.composite
def documents(draw: st.DrawFn) -> Dict[str, Any]:
    """A sound kubeconfig shaped like kubeadm's (server on a closed loopback
    port, CA, a client certificate or a token), with one to three keys
    dropped, changed or junk: most still load, so their values reach a request."""
    cluster: Dict[str, Any] = {
        "server": f"https://127.0.0.1:{_PORT}",
        "certificate-authority-data": _b64(_CA.ca_pem),
    }
    user: Dict[str, Any] = (
        {"token": "abc.def"}
        if draw(st.booleans())
        else {
            "client-certificate-data": _b64(_CLIENT.cert_pem),
            "client-key-data": _b64(_CLIENT.key_pem),
        }
    )
    context: Dict[str, Any] = {"cluster": "kubernetes", "user": "admin"}
    document: Dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": cluster}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
        "users": [{"name": "admin", "user": user}],
        "preferences": {},
    }
    places = [
        (cluster, _CLUSTER_KEYS),
        (user, _USER_KEYS),
        (context, {"cluster": _names, "user": _names}),
        (document, _TOP_KEYS),
    ]
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        mapping, keys = draw(st.sampled_from(places))
        key = draw(st.sampled_from(sorted(keys)))
        change = draw(st.sampled_from(["set", "set", "set", "junk", "drop"]))
        if change == "drop":
            mapping.pop(key, None)
        else:
            mapping[key] = draw(keys[key] if change == "set" else _junk)
    return document


def _plain(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9/_.][A-Za-z0-9/_.:+=-]*", text)) and text.lower() not in (
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "y",
        "n",
        "~",
    )


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _plain(value) and not value[0].isdigit():
        return value
    return json.dumps(value)


def to_yaml(value: Any, indent: int = 0) -> List[str]:
    """Block YAML as kubeadm writes it (mappings, sequences, plain or quoted scalars)."""
    pad = " " * indent
    lines: List[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_scalar(key)}:")
                lines.extend(to_yaml(item, indent + 2))
            else:
                empty = "{}" if isinstance(item, dict) else "[]"
                shown = empty if isinstance(item, (dict, list)) else _scalar(item)
                lines.append(f"{pad}{_scalar(key)}: {shown}")
    elif isinstance(value, list):
        for item in value:
            inner = to_yaml(item, indent + 2)
            if inner and isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(
                    f"{pad}- {_scalar(item) if not isinstance(item, (dict, list)) else '{}'}"
                )
    else:
        lines.append(pad + _scalar(value))
    return lines


def _nested(depth: int, flow: bool) -> str:
    if flow:
        return '{"apiVersion": "v1", "clusters": ' + "[" * depth + "]" * depth + "}"
    # Block mappings, each level two spaces deeper.
    return (
        "".join(f"{' ' * (2 * level)}k{level}:\n" for level in range(depth))
        + " " * (2 * depth)
        + "v: 1\n"
    )


texts = st.one_of(
    documents().map(lambda document: "\n".join(to_yaml(document)) + "\n"),
    documents().map(lambda document: "\n".join(to_yaml(document)) + "\n"),
    documents().map(lambda document: json.dumps(document)),
    st.text(max_size=300),
)


@inputs(3000)
@given(texts, st.sampled_from([None, "ctx", "nope"]))
def test_kubeconfig_gives_credentials_or_says_why(text: str, context: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        (folder / "ca.crt").write_bytes(_CA.ca_pem)
        (folder / "token").write_text("abc.def\n")
        path = folder / "config"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            credentials = load_kubeconfig(str(path), context)
        except KubeconfigError as error:
            assert str(error).startswith(str(path) + ": ")
            event("KubeconfigError")
            return
        event("loaded")
        with mock.patch("socket.getaddrinfo", _loopback_only):
            try:
                client = KubeApiClient(credentials, timeout=0.5)
                client.request("GET", "/api")
            except KubeApiError:
                event("KubeApiError")


# Deep nesting on its own, with fewer inputs: a parser takes up to a second
# to reach its recursion limit. Block nesting costs depth² bytes of
# indentation; a few hundred levels are past any parser's limit already.
nested_texts = st.one_of(
    st.builds(_nested, st.integers(1, 1500), st.just(True)),
    st.builds(_nested, st.integers(1, 400), st.just(False)),
)


@inputs(50, quick=3)
@given(nested_texts)
def test_deep_nesting_is_a_kubeconfig_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config"
        path.write_text(text)
        with contextlib.suppress(KubeconfigError):
            load_kubeconfig(str(path))
