"""Tests for agent.kubeconfig: real-shaped kubeconfigs, every error, no leaked secret."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Dict, Optional

import pytest
from apiserver_peer import ClientCa
from fuzz.fuzzing import inputs
from hypothesis import given
from hypothesis import strategies as st

from agent.kube.kubeconfig import KubeconfigError, load_kubeconfig

_CA = ClientCa()
CA_PEM = _CA.ca_pem
_PAIR = _CA.issue("kubernetes-admin", ("kubeadm:cluster-admins",))
CERT_PEM, KEY_PEM = _PAIR.cert_pem, _PAIR.key_pem
TOKEN = "K10abc.0123456789abcdef-secret-token"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# As `kubeadm init` writes /etc/kubernetes/admin.conf.
ADMIN_CONF = f"""\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64(CA_PEM)}
    server: https://10.0.0.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {b64(CERT_PEM)}
    client-key-data: {b64(KEY_PEM)}
"""

# As k3s writes /etc/rancher/k3s/k3s.yaml (RKE2's rke2.yaml is the same shape).
K3S_YAML = f"""\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64(CA_PEM)}
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {b64(CERT_PEM)}
    client-key-data: {b64(KEY_PEM)}
"""

# As kubeadm writes /etc/kubernetes/kubelet.conf: key and certificate as files.
KUBELET_CONF = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority: pki/ca.crt
    server: https://10.0.0.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:master-1
  name: system:node:master-1@kubernetes
current-context: system:node:master-1@kubernetes
kind: Config
preferences: {}
users:
- name: system:node:master-1
  user:
    client-certificate: /PKI/kubelet-client-current.pem
    client-key: /PKI/kubelet-client-current.pem
"""


def write(directory: Path, text: str, name: str = "config") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def config_error(directory: Path, text: str, context: Optional[str] = None) -> str:
    with pytest.raises(KubeconfigError) as caught:
        load_kubeconfig(write(directory, text), context)
    message = str(caught.value)
    for secret in (TOKEN, b64(KEY_PEM), KEY_PEM.decode()):
        assert secret not in message
    return message


# -- real shapes -----------------------------------------------------------------


def test_kubeadm_admin_conf(tmp_path: Path) -> None:
    path = write(tmp_path, ADMIN_CONF, "admin.conf")
    creds = load_kubeconfig(path)
    assert creds.kubeconfig == path
    assert creds.context == "kubernetes-admin@kubernetes"
    assert creds.server == "https://10.0.0.10:6443"
    assert creds.ca_pem == CA_PEM
    assert (creds.client_cert_pem, creds.client_key_pem) == (CERT_PEM, KEY_PEM)
    assert creds.token is None and not creds.insecure and creds.tls_server_name is None
    assert creds.auth == "client certificate"


def test_k3s_yaml(tmp_path: Path) -> None:
    creds = load_kubeconfig(write(tmp_path, K3S_YAML, "k3s.yaml"))
    assert (creds.context, creds.server) == ("default", "https://127.0.0.1:6443")
    assert creds.client_key_pem == KEY_PEM


def test_kubelet_conf_reads_files_relative_to_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(CA_PEM)
    pem = tmp_path / "kubelet-client-current.pem"
    pem.write_bytes(CERT_PEM + KEY_PEM)
    path = write(tmp_path, KUBELET_CONF.replace("/PKI/", f"{tmp_path}/"), "kubelet.conf")
    monkeypatch.chdir("/")
    creds = load_kubeconfig(path)
    assert creds.ca_pem == CA_PEM
    assert creds.client_cert_pem == creds.client_key_pem == CERT_PEM + KEY_PEM
    assert creds.context == "system:node:master-1@kubernetes"


def test_token_user_and_token_file(tmp_path: Path) -> None:
    with_token = ADMIN_CONF.split("users:")[0] + (
        "users:\n- name: kubernetes-admin\n  user:\n    token: " + TOKEN + "\n"
    )
    creds = load_kubeconfig(write(tmp_path, with_token))
    assert creds.token == TOKEN and creds.client_cert_pem is None
    assert creds.auth == "bearer token"

    (tmp_path / "token").write_text(TOKEN + "\n")
    from_file = with_token.replace(f"token: {TOKEN}", "tokenFile: token")
    assert load_kubeconfig(write(tmp_path, from_file)).token == TOKEN

    # As client-go: token wins over tokenFile.
    both = with_token + "    tokenFile: missing-file\n"
    assert load_kubeconfig(write(tmp_path, both)).token == TOKEN


def test_json_kubeconfig(tmp_path: Path) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://[::1]:6443/",
                    "insecure-skip-tls-verify": True,
                    "tls-server-name": "kubernetes",
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        "users": [{"name": "u", "user": {"token": TOKEN}}],
    }
    creds = load_kubeconfig(write(tmp_path, json.dumps(document, indent=2)))
    assert creds.server == "https://[::1]:6443"
    assert creds.insecure and creds.ca_pem is None
    assert creds.tls_server_name == "kubernetes" and creds.token == TOKEN


def test_context_switching(tmp_path: Path) -> None:
    text = ADMIN_CONF.replace(
        "contexts:\n",
        "contexts:\n- context:\n    cluster: other\n    user: robot\n  name: other\n",
    )
    text = text.replace(
        "clusters:\n",
        "clusters:\n- cluster:\n    server: https://other.example:443\n"
        "    insecure-skip-tls-verify: true\n  name: other\n",
    )
    text += f"- name: robot\n  user:\n    token: {TOKEN}\n"
    path = write(tmp_path, text)
    assert load_kubeconfig(path).server == "https://10.0.0.10:6443"
    other = load_kubeconfig(path, context="other")
    assert (other.context, other.server, other.token) == (
        "other",
        "https://other.example:443",
        TOKEN,
    )
    assert other.insecure


TRAILING_BLANKS = "   "


def test_hand_written_yaml_in_the_subset(tmp_path: Path) -> None:
    text = f"""\
---
# written by hand: indented lists, quotes, comments, CRLF, trailing blanks
apiVersion: "v1"
kind: 'Config'   # a comment
clusters:
  - name: 'it''s'
    cluster:
      server: "https://api.example\\u002ecom:6443"{TRAILING_BLANKS}
      certificate-authority-data: "{b64(CA_PEM)}"
      extensions:
        - name: client.authentication.k8s.io/exec
          extension: {{}}
users:
  -
    name: u
    user:
      token: '{TOKEN}'
contexts:
  - context:
      cluster: "it's"
      user: u
      namespace: ~
    name: c
current-context: c
preferences:
"""
    creds = load_kubeconfig(write(tmp_path, text.replace("\n", "\r\n")))
    assert creds.server == "https://api.example.com:6443"
    assert creds.token == TOKEN and creds.ca_pem == CA_PEM


def test_insecure_false_and_quoted_keys(tmp_path: Path) -> None:
    text = ADMIN_CONF.replace(
        "    server: https://10.0.0.10:6443",
        "    'server': https://10.0.0.10:6443\n    \"insecure-skip-tls-verify\": off",
    )
    creds = load_kubeconfig(write(tmp_path, text))
    assert creds.server == "https://10.0.0.10:6443" and not creds.insecure


def test_repr_hides_secrets(tmp_path: Path) -> None:
    creds = load_kubeconfig(write(tmp_path, ADMIN_CONF))
    text = repr(creds)
    assert "10.0.0.10" in text
    for secret in (KEY_PEM.decode(), "PRIVATE KEY", b64(KEY_PEM)[:40]):
        assert secret not in text
    token_creds = load_kubeconfig(
        write(tmp_path, json.dumps(_minimal({"token": TOKEN})), "token.json")
    )
    assert TOKEN not in repr(token_creds)


# -- errors ----------------------------------------------------------------------


def _minimal(user: Dict[str, object], **cluster: object) -> Dict[str, object]:
    return {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        "users": [{"name": "u", "user": user}],
    }


def _cert_user() -> Dict[str, object]:
    return {"client-certificate-data": b64(CERT_PEM), "client-key-data": b64(KEY_PEM)}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            {**_minimal(_cert_user()), "current-context": ""},
            "current-context: not set",
            id="no-ctx",
        ),
        pytest.param(
            {**_minimal(_cert_user()), "current-context": "y"},
            "contexts: no entry named 'y' (there are: 'x')",
            id="unknown-ctx",
        ),
        pytest.param(
            {**_minimal(_cert_user()), "clusters": [{"name": "c", "cluster": {}}]},
            "clusters[0].cluster.server: missing",
            id="no-server",
        ),
        pytest.param(
            _minimal({**_cert_user(), "client-key-data": "not base64!"}),
            "users[0].user.client-key-data: not valid base64",
            id="bad-base64",
        ),
        pytest.param(
            _minimal({**_cert_user(), "client-key-data": b64(CERT_PEM)}),
            "users[0].user.client-key-data: not a private key in PEM format",
            id="key-not-pem",
        ),
        pytest.param(
            _minimal(_cert_user(), **{"certificate-authority-data": b64(b"hello")}),
            "clusters[0].cluster.certificate-authority-data: not a certificate in PEM format",
            id="ca-not-pem",
        ),
        pytest.param(
            _minimal({"client-certificate-data": b64(CERT_PEM)}),
            "users[0].user: has a client-certificate but no client-key(-data)",
            id="cert-no-key",
        ),
        pytest.param(
            _minimal({**_cert_user(), "client-key": "/k.pem"}),
            "users[0].user: both client-key and client-key-data are set; keep one",
            id="data-and-file",
        ),
        pytest.param(
            _minimal({}), "users[0].user: has no client certificate and no token", id="no-auth"
        ),
        pytest.param(
            _minimal({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}),
            "users[0].user.exec: an exec credential plugin is not supported",
            id="exec",
        ),
        pytest.param(
            _minimal({"auth-provider": {"name": "oidc"}}),
            "users[0].user.auth-provider: an auth-provider plugin is not supported",
            id="auth-provider",
        ),
        pytest.param(
            _minimal({"username": "admin", "password": "pw"}),
            "users[0].user.username: basic authentication is not supported",
            id="basic",
        ),
        pytest.param(
            _minimal({"token": TOKEN, "as": "someone"}),
            "users[0].user.as: impersonation is not supported",
            id="impersonation",
        ),
        pytest.param(
            _minimal({"token": "two words"}),
            "users[0].user.token: contains whitespace or control characters",
            id="token-spaces",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, **{"proxy-url": "http://proxy:3128"}),
            "clusters[0].cluster.proxy-url: proxies are not supported",
            id="proxy",
        ),
        pytest.param(
            _minimal(
                {"token": TOKEN},
                **{"insecure-skip-tls-verify": True, "certificate-authority-data": b64(CA_PEM)},
            ),
            "clusters[0].cluster.insecure-skip-tls-verify: true together with a certificate",
            id="insecure-and-ca",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, **{"insecure-skip-tls-verify": "maybe"}),
            "clusters[0].cluster.insecure-skip-tls-verify: must be true or false",
            id="bad-bool",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, server="http://127.0.0.1:8080"),
            "clusters[0].cluster.server: 'http://127.0.0.1:8080' is not https://",
            id="http",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, server="https://127.0.0.1:port"),
            "clusters[0].cluster.server: not a valid URL",
            id="bad-port",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, server="https://admin@127.0.0.1:6443"),
            "clusters[0].cluster.server: 'https://admin@127.0.0.1:6443' is not an https://host",
            id="userinfo",
        ),
        pytest.param(
            _minimal({"token": TOKEN}, server=6443),
            "clusters[0].cluster.server: must be a string",
            id="server-number",
        ),
        pytest.param(
            {**_minimal({"token": TOKEN}), "users": None},
            "users: no entry named 'u' (there are: none)",
            id="users-null",
        ),
        pytest.param(
            {**_minimal({"token": TOKEN}), "kind": "Pod"}, "kind: is 'Pod'", id="not-config"
        ),
        pytest.param(
            {**_minimal({"token": TOKEN}), "users": {"u": {}}}, "users: must be a list", id="users"
        ),
        pytest.param(
            {**_minimal({"token": TOKEN}), "contexts": [{"name": "x", "context": []}]},
            "contexts[0].context: must be a mapping",
            id="ctx-list",
        ),
        pytest.param(
            {**_minimal({"token": TOKEN}), "contexts": [{"name": "x", "context": {"user": "u"}}]},
            "contexts[0].context.cluster: missing",
            id="ctx-no-cluster",
        ),
    ],
)
def test_errors_name_the_key_path(
    tmp_path: Path, document: Dict[str, object], expected: str
) -> None:
    message = config_error(tmp_path, json.dumps(document))
    assert message.startswith(f"{tmp_path / 'config'}: ")
    assert expected in message


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent.conf"
    with pytest.raises(KubeconfigError, match=r"absent\.conf: cannot read: No such file"):
        load_kubeconfig(str(missing))

    message = config_error(tmp_path, json.dumps(_minimal({"tokenFile": "nowhere"})))
    assert f"users[0].user.tokenFile: cannot read {tmp_path}/nowhere: No such file" in message

    (tmp_path / "empty").write_text("\n")
    message = config_error(tmp_path, json.dumps(_minimal({"tokenFile": "empty"})))
    assert "users[0].user.tokenFile: the file is empty" in message

    message = config_error(tmp_path, "{ not json")
    assert message.endswith("config: not valid YAML at line 1, column 11")

    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KubeconfigError, match="not UTF-8"):
        load_kubeconfig(str(tmp_path / "binary"))

    assert config_error(tmp_path, "") == f"{tmp_path / 'config'}: empty"


def test_yaml_beyond_what_kubeadm_writes(tmp_path: Path) -> None:
    # Flow style, anchors and aliases, a tag, a block scalar: all YAML.
    text = f"""\
kind: Config
clusters: [{{name: k, cluster: {{server: "https://10.0.0.10:6443", insecure-skip-tls-verify: yes}}}}]
users:
- name: u
  user: &user
    token: !!str |-
      {TOKEN}
contexts:
- {{name: c, context: {{cluster: k, user: u}}}}
- name: alias
  context: {{cluster: k, user: u, extra: *user}}
current-context: c
"""
    creds = load_kubeconfig(write(tmp_path, text))
    assert (creds.server, creds.token, creds.insecure) == ("https://10.0.0.10:6443", TOKEN, True)


def _after_the_key(line: str) -> str:
    return ADMIN_CONF.replace("    client-key-data:", line + "\n    client-key-data:")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_after_the_key("\ttoken: abc"), id="tab"),
        pytest.param(_after_the_key("    token: 'abc"), id="open-quote"),
        pytest.param(_after_the_key('    token: "a\\qb"'), id="bad-escape"),
        pytest.param(_after_the_key(f"    token: {TOKEN}: b"), id="colon-in-value"),
        pytest.param(_after_the_key(f"    token: *{TOKEN}"), id="undefined-alias"),
        pytest.param(_after_the_key(f"    token: !{TOKEN} x"), id="unknown-tag"),
        pytest.param(ADMIN_CONF + "---\nkind: Config\n", id="two-documents"),
        pytest.param(ADMIN_CONF.replace(f"{b64(KEY_PEM)}", f"{b64(KEY_PEM)}: {TOKEN}"), id="key"),
        pytest.param("{ not json", id="json"),
    ],
)
def test_invalid_yaml_is_reported_by_line_and_column_only(tmp_path: Path, text: str) -> None:
    message = config_error(tmp_path, text)
    # Nothing of the file: neither its words nor PyYAML's, which quote it.
    assert re.fullmatch(
        re.escape(f"{tmp_path / 'config'}: not valid YAML") + r" at line \d+, column \d+", message
    ), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[" * 100_000, "nested too deeply", id="deep-yaml-flow"),
        pytest.param(
            "a:\n" + "".join(f"{' ' * i}- \n" for i in range(1, 3000)),
            "nested too deeply",
            id="deep-block",
        ),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply", id="deep-json"),
        pytest.param("just a string\n", "must be a mapping", id="scalar"),
        pytest.param("- a\n- b\n", "must be a mapping", id="list"),
        pytest.param(
            "{1: 2, null: [], 2026-01-01: x}\n", "current-context: not set", id="odd-keys"
        ),
        pytest.param(
            "current-context: 2026-01-01\n", "current-context: must be a string", id="date"
        ),
        pytest.param("kind: [Config]\n", "kind: is ['Config']", id="kind-list"),
    ],
)
def test_odd_documents_are_kubeconfig_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            {"server": "https://bücher.example:6443"},
            "clusters[0].cluster.server: 'https://bücher.example:6443' is not plain ASCII",
        ),
        (
            {"server": "https://10.0.0.1:6443", "tls-server-name": "bücher.example"},
            "clusters[0].cluster.tls-server-name: 'bücher.example' is not a host name",
        ),
        (
            {"server": "https://10.0.0.1:6443", "tls-server-name": "a\nb"},
            "clusters[0].cluster.tls-server-name: 'a\\nb' is not a host name",
        ),
        (
            {"server": "https://10.0.0.1:6443", "certificate-authority": "ca\x00.pem"},
            "clusters[0].cluster.certificate-authority: cannot read",
        ),
    ],
)
def test_names_outside_ascii_are_kubeconfig_errors(
    tmp_path: Path, cluster: Dict[str, str], expected: str
) -> None:
    document = _minimal({"token": TOKEN}, **cluster)
    assert expected in config_error(tmp_path, json.dumps(document))


# Fragments real kubeconfigs are made of, and ways to break them.
_FRAGMENTS = st.sampled_from(
    [
        "kind: Config\n",
        "clusters:\n",
        "- name: k\n",
        "  cluster:\n",
        "    server: https://10.0.0.1:6443\n",
        "    server: https://ü.example\n",
        "users: [{name: u, user: {token: abc}}]\n",
        "contexts:\n- name: c\n",
        "  context: {cluster: k, user: u}\n",
        "current-context: c\n",
        "[",
        "{",
        "]",
        "}",
        "&a ",
        "*a ",
        "!!binary ",
        "|\n",
        "\t",
        "  ",
        "- ",
        ": ",
        "'",
        '"',
        "\\",
        "\x00",
        "tokenFile: /dev/null\n",
        "client-key-data: eA==\n",
        "2026-01-01",
        "~",
        "\n",
    ]
)


@inputs(300, quick=30)
@given(st.lists(_FRAGMENTS, max_size=40).map("".join))
def test_any_text_is_credentials_or_a_kubeconfig_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    try:
        load_kubeconfig(path)
    except KubeconfigError as exc:
        assert "\n" not in str(exc).replace(str(tmp_path), "")
