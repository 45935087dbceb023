"""Auto discovery on stand-in nodes of every shape (issue 12), end to end.

Each node is a fresh network, PID and mount namespace made by the test
(`unshare`), so the shape's fixed ports are free and discovery sees only the
stand-ins; inside it, `kube-loopback-guard check` runs with a config naming
no target. The processes carry the real programs' names (symlinks to the
interpreter) and serve upstream-shaped loopback pairs on the shape's port.
Needs root (CI runs as root); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Dict

import pytest

from agent.config.types import TargetConfig
from agent.observe.flags import args_file_words, read_flags
from agent.observe.shapes import recognise

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = HERE / "shape_node.py"
UNSHARE = ("unshare", "--net", "--pid", "--fork", "--mount-proc")


def _can_unshare() -> str:
    if os.geteuid() != 0:
        return "needs root to make namespaces"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot make namespaces here: {probe.stderr.decode().strip()}"
    return ""


_SKIP = _can_unshare()
needs_namespaces = pytest.mark.skipif(bool(_SKIP), reason=_SKIP or "ok")


def run_node(shape: str, tmp_path: Path) -> Dict[str, Any]:
    """Given a shape, run its stand-in node and return what shape_node.py printed."""
    env = dict(os.environ)
    # The symlinked interpreter is not the venv's: give it the agent and its libraries.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    env.pop("NOTIFY_SOCKET", None)
    ran = subprocess.run(
        [*UNSHARE, sys.executable, str(NODE), "node", shape, str(tmp_path)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr.decode()[-3000:]
    result: Dict[str, Any] = json.loads(ran.stdout.decode().strip().splitlines()[-1])
    return result


def _targets(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {t["name"]: t for t in result["check"]["targets"]}


def _days(target: Dict[str, Any]) -> int:
    return round(target["seconds_left"] / 86400)


@needs_namespaces
def test_kubeadm_node(tmp_path: Path) -> None:
    targets = _targets(run_node("kubeadm", tmp_path))
    assert list(targets) == ["kube-apiserver"]
    t = targets["kube-apiserver"]
    assert (t["kind"], t["source"], _days(t)) == ("kubeadm", "probe", 30)
    assert (t["endpoint"]["host"], t["endpoint"]["port"]) == ("127.0.0.1", 6443)


@needs_namespaces
def test_k3s_node_probes_6444_and_never_asks_the_dynamiclistener(tmp_path: Path) -> None:
    result = run_node("k3s", tmp_path)
    targets = _targets(result)
    assert list(targets) == ["k3s"]
    t = targets["k3s"]
    assert (t["kind"], t["source"], _days(t)) == ("k3s", "probe", 31)
    assert (t["endpoint"]["host"], t["endpoint"]["port"]) == ("127.0.0.1", 6444)
    # k3s's own listener on 6443 adds every SNI it is asked for to its
    # certificate (before v1.28): the agent never asked it anything.
    assert "apiserver-loopback-client" not in result["sni"]
    assert result["sni"] == []
    # ...and the recorder does record: the test's own handshake is there.
    assert result["sni_after_selftest"] == ["selftest.invalid"]


@needs_namespaces
def test_microk8s_node_reads_the_args_file(tmp_path: Path) -> None:
    targets = _targets(run_node("microk8s", tmp_path))
    assert list(targets) == ["microk8s"]
    t = targets["microk8s"]
    assert (t["kind"], t["source"], _days(t)) == ("microk8s", "probe", 32)
    assert t["endpoint"]["port"] == 16443


@needs_namespaces
def test_k0s_node_knows_the_child_of_k0s(tmp_path: Path) -> None:
    targets = _targets(run_node("k0s", tmp_path))
    assert list(targets) == ["kube-apiserver"]
    t = targets["kube-apiserver"]
    assert (t["kind"], t["source"], _days(t)) == ("k0s", "probe", 33)


@needs_namespaces
def test_openshift_node_checks_both_apiservers(tmp_path: Path) -> None:
    result = run_node("openshift", tmp_path)
    targets = _targets(result)
    assert sorted(targets) == ["kube-apiserver", "openshift-apiserver"]
    kube, aggregated = targets["kube-apiserver"], targets["openshift-apiserver"]
    assert (kube["kind"], kube["endpoint"]["port"], _days(kube)) == ("openshift", 6443, 34)
    assert (aggregated["kind"], aggregated["endpoint"]["port"]) == ("aggregated", 8443)
    assert _days(aggregated) == 35
    # Two targets, worst first: exit 1 (WARNING) for both under 60 days.
    assert result["exit"] == 1
    # --target picks a discovered apiserver by its name.
    (only,) = result["only"]["targets"]
    assert (only["name"], only["endpoint"]["port"]) == ("openshift-apiserver", 8443)


@needs_namespaces
def test_target_option_names_an_apiserver_not_found(tmp_path: Path) -> None:
    (only,) = run_node("kubeadm", tmp_path)["only"]["targets"]
    assert (only["name"], only["state"]) == ("absent", "unknown")
    assert only["error"] == "no apiserver named absent (found: kube-apiserver)"


@needs_namespaces
def test_hosted_control_planes_in_their_own_network_namespaces(tmp_path: Path) -> None:
    # Two kube-apiservers, each in a network namespace made by the test
    # (ip netns add, a veth pair, 10.213.x.0/24), both on 6443: one listens on
    # every address, one on its own loopback only (as vcluster's child does).
    result = run_node("pods", tmp_path)
    targets = _targets(result)
    # No CRI and no kubepods cgroup here: named by address (README).
    assert sorted(targets) == ["10.213.7.2:6443", "10.213.8.2:6443"]
    reachable, hidden = targets["10.213.7.2:6443"], targets["10.213.8.2:6443"]
    assert (reachable["kind"], reachable["source"], _days(reachable)) == ("pod", "probe", 40)
    assert (reachable["endpoint"]["host"], reachable["endpoint"]["port"]) == ("10.213.7.2", 6443)
    # Found, but not reachable without entering its namespace: estimated from
    # its start time, never probed (so never a wrong date from another server).
    assert hidden["kind"] == "pod"
    assert hidden["source"] == "process-start"
    assert hidden["endpoint"] is None
    assert "listens only on 127.0.0.1 inside its own network namespace" in hidden["error"]
    assert hidden["process"]["pid"] in result["pids"]


@needs_namespaces
def test_node_without_apiserver_probes_nothing(tmp_path: Path) -> None:
    # Only the explicitly named: with no apiserver process, the default
    # target says so and probes nothing (not even 6443).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    config = tmp_path / "config.toml"
    config.write_text("")
    ran = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "agent", "check", "--json", "--config", str(config)],
        stdout=subprocess.PIPE,
        env=env,
        timeout=60,
        check=False,
    )
    (t,) = json.loads(ran.stdout)["targets"]
    assert t["state"] == "unknown"
    assert t["endpoint"] is None
    assert "no apiserver process found on this node" in t["error"]


# --- the pure rules, as a table --------------------------------------------------


@pytest.mark.parametrize(
    ("comm", "argv", "parent", "args_file", "expected"),
    [
        ("kube-apiserver", ["--secure-port=6443"], "containerd-shim", None, ("kubeadm", 6443)),
        ("kube-apiserver", ["--secure-port", "7443"], "systemd", None, ("kubeadm", 7443)),
        ("kube-apiserver", [], "k0s", None, ("k0s", 6443)),
        ("kube-apiserver", ["--openshift-config=/x.yaml"], "crio", None, ("openshift", 6443)),
        # k3s's argv is rewritten: whatever it says, 6444 on loopback.
        ("k3s-server", ["server", "--secure-port=6443"], "systemd", None, ("k3s", 6444)),
        (
            "kubelite",
            ["--apiserver-args-file=/a"],
            "systemd",
            "--secure-port=16443\n",
            ("microk8s", 16443),
        ),
        ("kubelite", ["--apiserver-args-file=/a"], "systemd", "# none\n", ("microk8s", 6443)),
        ("openshift-apiserver", ["start", "--config=/c.yaml"], "crio", None, ("aggregated", 8443)),
        ("etcd", ["--listen-client-urls=https://127.0.0.1:2379"], "crio", None, None),
    ],
)
def test_recognise(comm: str, argv: list, parent: str, args_file: str, expected: object) -> None:
    file_flags = None if args_file is None else read_flags(["x", *args_file_words(args_file)])
    shape = recognise(
        comm, comm, read_flags([comm, *argv]), parent, file_flags, ("openshift-apiserver",)
    )
    got = None if shape is None else (shape.kind, shape.port)
    assert got == expected


def test_k3s_hosts_are_loopback_only() -> None:
    shape = recognise("k3s-server", "k3s", read_flags(["k3s", "server"]), "systemd", None, ())
    assert shape is not None
    assert shape.hosts == ("127.0.0.1", "::1")
    assert 6443 not in (shape.port,)


def test_target_config_default_discovers_all() -> None:
    from datetime import timedelta

    base = TargetConfig("kube-apiserver", "kube-apiserver", "", 0, "x", timedelta(seconds=5), None)
    assert base.discovers_all
    assert not TargetConfig(
        "a", "kube-apiserver", "127.0.0.1", 0, "x", timedelta(5), None
    ).discovers_all
