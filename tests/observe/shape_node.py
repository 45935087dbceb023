"""Stand-in control-plane nodes of every shape, for tests/observe/test_shapes.py.

Run inside a fresh network, PID and mount namespace (`unshare --net --pid
--fork --mount-proc`), so the shape's fixed ports (6443, 6444, 16443, 8443)
are free and discovery sees only the stand-ins:

    python shape_node.py node SHAPE WORKDIR

starts the processes of SHAPE, each through a symlink named as the real
program (so /proc/PID/comm is right), runs `python -m agent check --json`
with a config that names no target, and prints one JSON object: the check's
output, the SNIs the k3s "dynamiclistener" was asked for, and whether that
recorder works at all (the test sends it one handshake of its own).

The other roles are the stand-in processes themselves:
    serve PORT DAYS            a stand-in apiserver (port positional, no flag)
    k3s DAYS SNI_LOG           k3s-server: apiserver on 127.0.0.1:6444 and a
                               dynamiclistener on 6443 recording every SNI
    kubelite DAYS --apiserver-args-file=PATH   MicroK8s: port from the file
    k0s DAYS                   k0s: runs kube-apiserver as its child
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve()
PYTHON = os.path.realpath(sys.executable)
DAYS = {
    "kubeadm": 30,
    "k3s": 31,
    "microk8s": 32,
    "k0s": 33,
    "openshift": 34,
    "openshift-apiserver": 35,
    "pods": 40,
}
# Two hosted control planes, each in a network namespace of its own behind a
# veth pair, in a private range: (namespace, node side, pod side, --bind-address).
PODS = (
    ("klg-pod-a", "10.213.7.1", "10.213.7.2", "0.0.0.0"),
    ("klg-pod-b", "10.213.8.1", "10.213.8.2", "127.0.0.1"),
)


def _serve(port: int, days: int, host: str = "127.0.0.1") -> None:
    from agent.standin.server import StandinApiserver

    StandinApiserver(host=host, port=port, expires_in=timedelta(days=days)).start()


def _wait_forever() -> None:
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _dynamiclistener(port: int, log: str) -> None:
    """Accept TLS on 127.0.0.1:port, append every SNI asked for to `log`."""
    from agent.standin.certs import make_serving_pair, server_context

    context = server_context(make_serving_pair(datetime.now(timezone.utc)))

    def record(_sock: ssl.SSLObject, name: object, _ctx: ssl.SSLContext) -> None:
        with open(log, "a") as handle:
            handle.write(f"{name}\n")

    context.sni_callback = record  # type: ignore[assignment]
    listener = socket.create_server(("127.0.0.1", port))

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            try:
                conn.settimeout(2)
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=loop, daemon=True).start()


def _link(workdir: Path, name: str) -> str:
    link = workdir / name
    if not link.is_symlink():
        link.symlink_to(PYTHON)
    return str(link)


def _start(argv: List[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)


def _wait_port(port: int, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port}")


def node(shape: str, workdir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    script = str(HERE)
    log = str(workdir / "sni.log")
    Path(log).write_text("")
    children: List[subprocess.Popen[bytes]] = []
    days = DAYS[shape]
    if shape == "kubeadm":
        argv = [_link(workdir, "kube-apiserver"), "-m", "agent.standin"]
        argv += ["--secure-port=6443", "--bind-address=0.0.0.0", f"--expires-in={days}d"]
        children.append(_start(argv))
        ports = [6443]
    elif shape == "k3s":
        children.append(_start([_link(workdir, "k3s-server"), script, "k3s", str(days), log]))
        ports = [6444, 6443]
    elif shape == "microk8s":
        snap_data = workdir / "snap"
        (snap_data / "args").mkdir(parents=True)
        (snap_data / "args" / "kube-apiserver").write_text(
            "--cert-dir=${SNAP_DATA}/certs\n# a comment\n\n--secure-port=16443\n"
            '--etcd-servers="unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379"\n'
        )
        env = dict(os.environ, SNAP_DATA=str(snap_data))
        flag = "--apiserver-args-file=$SNAP_DATA/args/kube-apiserver"
        argv = [_link(workdir, "kubelite"), script, "kubelite", str(days), flag]
        children.append(_start(argv, env))
        ports = [16443]
    elif shape == "k0s":
        children.append(_start([_link(workdir, "k0s"), script, "k0s", str(days)]))
        ports = [6443]
    elif shape == "openshift":
        argv = [_link(workdir, "kube-apiserver"), "-m", "agent.standin"]
        argv += ["--openshift-config=/etc/kubernetes/static-pod-resources/config.yaml"]
        argv += [f"--expires-in={days}d"]
        children.append(_start(argv))
        aggregated = [_link(workdir, "openshift-apiserver"), script, "serve", "8443"]
        children.append(_start([*aggregated, str(DAYS["openshift-apiserver"])]))
        ports = [6443, 8443]
    elif shape == "pods":
        # `ip netns add` creates /run/netns and files in it: a /run of this
        # mount namespace's own keeps them off the host.
        subprocess.run(["mount", "-t", "tmpfs", "klg-run", "/run"], check=True)
        ports = []
        for index, (netns, node_ip, pod_ip, bind) in enumerate(PODS):
            host_if, pod_if = f"klg-h{index}", f"klg-p{index}"
            for command in (
                f"ip netns add {netns}",
                f"ip link add {host_if} type veth peer name {pod_if}",
                f"ip link set {pod_if} netns {netns}",
                f"ip addr add {node_ip}/24 dev {host_if}",
                f"ip link set {host_if} up",
                f"ip netns exec {netns} ip addr add {pod_ip}/24 dev {pod_if}",
                f"ip netns exec {netns} ip link set {pod_if} up",
                f"ip netns exec {netns} ip link set lo up",
            ):
                subprocess.run(command.split(), check=True)
            argv = ["ip", "netns", "exec", netns, _link(workdir, "kube-apiserver")]
            argv += ["-m", "agent.standin", "--secure-port=6443", f"--bind-address={bind}"]
            children.append(_start([*argv, f"--expires-in={days}d"]))
        _wait_port(6443, PODS[0][2])
        time.sleep(0.5)  # the loopback-only one cannot be polled from here
    else:
        raise SystemExit(f"unknown shape {shape}")
    for port in ports:
        _wait_port(port)
    config = workdir / "config.toml"
    config.write_text("")
    checked = subprocess.run(
        [PYTHON, "-m", "agent", "check", "--json", "--config", str(config)],
        stdout=subprocess.PIPE,
        check=False,
    )
    wanted = "openshift-apiserver" if shape == "openshift" else "absent"
    only = subprocess.run(
        [PYTHON, "-m", "agent", "check", "--json", "--config", str(config), "--target", wanted],
        stdout=subprocess.PIPE,
        check=False,
    )
    asked_before_selftest = Path(log).read_text().split()
    if shape == "k3s":
        # The recorder must work, or "never asked" proves nothing.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", 6443), timeout=5)
        try:
            context.wrap_socket(raw, server_hostname="selftest.invalid").close()
        finally:
            raw.close()
    result = {
        "exit": checked.returncode,
        "check": json.loads(checked.stdout),
        "only": json.loads(only.stdout),
        "sni": asked_before_selftest,
        "sni_after_selftest": Path(log).read_text().split(),
        "pids": [child.pid for child in children],
    }
    print(json.dumps(result))
    for child in children:
        child.terminate()
        child.wait(10)


def main(argv: List[str]) -> None:
    role = argv[0]
    if role == "node":
        node(argv[1], Path(argv[2]))
    elif role == "serve":
        _serve(int(argv[1]), int(argv[2]))
        _wait_forever()
    elif role == "k3s":
        _serve(6444, int(argv[1]))
        _dynamiclistener(6443, argv[2])
        _wait_forever()
    elif role == "kubelite":
        path = argv[2].split("=", 1)[1].replace("$SNAP_DATA", os.environ["SNAP_DATA"])
        found = re.search(r"^--secure-port=(\d+)$", Path(path).read_text(), re.M)
        assert found is not None
        _serve(int(found.group(1)), int(argv[1]))
        _wait_forever()
    elif role == "k0s":
        # Our own argv[0] is the k0s link; the child's link sits next to it.
        own = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
        child_link = Path(own).parent / "kube-apiserver"
        if not child_link.is_symlink():
            child_link.symlink_to(PYTHON)
        child = subprocess.Popen(
            [
                str(child_link),
                "-m",
                "agent.standin",
                "--secure-port=6443",
                f"--expires-in={argv[1]}d",
            ],
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_forever()
        finally:
            child.terminate()
            child.wait(10)


if __name__ == "__main__":
    if sys.argv[1] != "node":
        # Before any thread starts, so sigwait is where the signal arrives.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1:])
