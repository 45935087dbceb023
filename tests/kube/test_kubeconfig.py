"""Tests for agent.kubeconfig: real-shaped kubeconfigs, every error, no leaked secret."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Dict, Optional

import pytest
from apiserver_peer import ClientCa

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
    assert "line 1: not valid JSON" in message

    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KubeconfigError, match="not UTF-8"):
        load_kubeconfig(str(tmp_path / "binary"))

    assert config_error(tmp_path, "") == f"{tmp_path / 'config'}: empty"


@pytest.mark.parametrize(
    ("line", "construct"),
    [
        ("    user: {name: x}", "flow mappings ({...})"),
        ("    user: [a, b]", "flow sequences ([...])"),
        ("    user: &admin", "anchors (&)"),
        ("    user: *admin", "aliases (*)"),
        ("    token: !!str abc", "tags (!)"),
        ("    token: |", "block scalars (|)"),
        ("    token: >-", "folded block scalars (>)"),
        ("\ttoken: abc", "tabs in indentation"),
        ("    token: 'abc", "a quoted string continued on the next line"),
        ('    token: "a\\qb"', "an unsupported escape"),
        ("    token: 'abc' tail", "text after a quoted string"),
        ("    token: a: b", "a plain value containing ': '"),
        ("    token: - a", "a list item on the line of its key"),
        ("    token abc", "a line that is not `key: value`"),
        ("      token: abc", "unexpected indentation"),
        ("    ? token", "complex keys (?)"),
        ("  user:", "duplicate key 'user'"),
        ("    - token", "a list item where a key was expected"),
        ("---", "more than one YAML document"),
        ("%YAML 1.2", "directives (%)"),
    ],
)
def test_yaml_outside_the_subset(tmp_path: Path, line: str, construct: str) -> None:
    # The line goes in after the client certificate, before the key.
    text = ADMIN_CONF.replace("    client-key-data:", line + "\n    client-key-data:")
    lines = text.splitlines()
    key_line = next(i for i, row in enumerate(lines) if row.startswith("    client-key-data:"))
    number = key_line  # the 1-based number of the line just before it
    message = config_error(tmp_path, text)
    assert f"line {number}: {construct}" in message
    assert "point `kubeconfig` at a file in the plain format" in message


def test_yaml_structure_errors(tmp_path: Path) -> None:
    assert "line 1: the top level must be a mapping" in config_error(tmp_path, "- a\n- b\n")
    assert "line 1: the top level must not be indented" in config_error(tmp_path, "  a: b\n")
    message = config_error(tmp_path, "a:\n  b: c\n d: e\n")
    assert "line 3: unexpected indentation" in message
    # A value continued on the next line (YAML would fold it; we refuse).
    message = config_error(tmp_path, "token: abc\n  def\n")
    assert "line 2: unexpected indentation" in message
    message = config_error(tmp_path, "a:\n  - x\n    - y\n")
    assert "line 3: unexpected indentation" in message


def test_secrets_never_quoted_in_yaml_errors(tmp_path: Path) -> None:
    text = ADMIN_CONF.replace(
        f"client-key-data: {b64(KEY_PEM)}", f"client-key-data: {b64(KEY_PEM)}: {TOKEN}"
    )
    message = config_error(tmp_path, text)
    assert "a plain value containing ': '" in message
