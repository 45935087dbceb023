"""Tests for agent.restart_methods, against real processes.

The apiserver is a real process named kube-apiserver (the stand-in, restarted
by tests/supervisor.py as kubelet would). crictl and systemctl are stand-in
scripts that record their argv; real systemd is exercised by the packaging
end-to-end test, not here.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import Spawn, wait_process_gone
from faulty_peers import closed_port
from supervisor import Supervised, Supervisors

from agent.model import LOOPBACK_SERVER_NAME, ApiserverProcess
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe
from agent.restart.methods import (
    restart_command,
    restart_signal,
    restart_static_pod,
    restart_systemd,
    shape_method,
)

APISERVER_ID = "3f2a" + "0" * 60
PROXY_ID = "9c1d" + "1" * 60
EXITED_ID = "77aa" + "2" * 60

PYTHON = sys.executable


def _process(supervised: Supervised) -> ApiserverProcess:
    found = ProcessFinder().find("kube-apiserver", supervised.port).process
    # Other kube-apiservers may run on this machine (the packaging tests' one).
    assert found is not None and found.secure_port == supervised.port
    return found


def _not_after(supervised: Supervised) -> Any:
    result = probe("127.0.0.1", supervised.port, LOOPBACK_SERVER_NAME, 5)
    assert result.cert is not None, result.error
    return result.cert.not_after


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{PYTHON}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- static pod, without crictl ----------------------------------------------


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_static_pod_without_crictl_sigterms_and_a_new_apiserver_serves_a_later_cert(
    supervisors: Supervisors, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pidfd: bool
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no crictl anywhere
    if not pidfd:
        # As on Linux before 5.3: the plain kill(2) path.
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    api = supervisors.start()
    old = _process(api)
    old_not_after = _not_after(api)

    result = restart_static_pod(old, timeout=10)

    assert result.ok, result.detail
    assert result.detail == f"sent SIGTERM to PID {old.pid}"
    new_pid = api.wait_for_child(other_than=old.pid)
    assert _process(api).pid == new_pid
    assert _not_after(api) > old_not_after
    # The stand-in ends cleanly on SIGTERM, as kube-apiserver does.
    assert api.exits() == [f"{old.pid} 0"]


def test_static_pod_never_signals_a_reused_pid(
    supervisors: Supervisors, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    api = supervisors.start()
    live = _process(api)
    stale = replace(live, started_at=live.started_at - timedelta(seconds=30))

    result = restart_static_pod(stale, timeout=10)

    assert not result.ok
    assert f"PID {live.pid} is another process now" in result.detail
    assert result.detail.endswith("not signalled")
    renamed = replace(live, name="etcd")
    result = restart_static_pod(renamed, timeout=10)
    assert not result.ok
    assert "'kube-apiserver' now, not 'etcd'" in result.detail
    time.sleep(0.3)
    assert api.child_pid() == live.pid
    assert api.exits() == []


def test_static_pod_reports_a_process_that_is_gone(spawn: Spawn, tmp_path: Path) -> None:
    port = closed_port()
    child = spawn("kube-apiserver", f"--secure-port={port}")
    process = ProcessFinder().find("kube-apiserver", port).process
    assert process is not None and process.pid == child.pid
    child.kill()
    child.wait()

    result = restart_static_pod(process, timeout=5, crictl=str(tmp_path / "absent"))

    assert not result.ok
    assert result.detail == f"PID {child.pid} is gone; no container stopped"


# -- static pod, through a stand-in crictl -----------------------------------

_FAKE_CRICTL = """
import json, os, signal, sys

SPEC = json.load(open({spec!r}))
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
# As crictl does without /etc/crictl.yaml; only stdout is to be parsed.
sys.stderr.write('WARN[0000] runtime connect using default endpoints: [unix:///run/containerd/'
                 'containerd.sock unix:///run/crio/crio.sock]. As the default settings are now '
                 'deprecated, you should set the endpoint instead.\\n')
verb = next(a for a in args if a in ("ps", "inspect", "stop"))
if verb in SPEC.get("fail", {{}}):
    code, message = SPEC["fail"][verb]
    sys.stderr.write(message + "\\n")
    sys.exit(code)


def child_pid():
    return int(open(os.path.join({state!r}, "child.pid")).read())


def pid_of(spec):
    if spec == "child":
        return child_pid()
    return {{"supervisor": SPEC["supervisor"], "self": os.getpid(), "none": None}}[spec]


containers = {{c["id"]: c for c in SPEC["containers"]}}
if verb == "ps":
    # Like crictl: running containers only; --name is not applied here, so
    # the caller's exact-name check is what keeps the proxy out.
    for c in SPEC["containers"]:
        if c["state"] == "CONTAINER_RUNNING":
            print(c["id"])
elif verb == "inspect":
    c = containers[args[-1]]
    info = {{"sandboxID": "abc", "runtimeSpec": {{"process": {{"args": ["x"] * 2000}}}}}}
    pid = pid_of(c["pid"])
    if pid is not None:
        info["pid"] = pid
    print(json.dumps({{
        "status": {{"id": c["id"], "metadata": {{"name": c["name"], "attempt": 0}},
                    "state": c["state"]}},
        "info": info,
    }}, indent=2))
elif verb == "stop":
    # Stopping the container ends its processes; the supervisor plays kubelet.
    assert containers[args[-1]]["name"] == "kube-apiserver"
    os.kill(child_pid(), signal.SIGTERM)
    print(args[-1])
"""


def _container(
    container_id: str, name: str, pid: str, state: str = "CONTAINER_RUNNING"
) -> Dict[str, Any]:
    """A container for the crictl stand-in; pid is "child" (the supervised
    apiserver), "supervisor" (its parent), "self" (crictl's own PID) or "none"
    (crictl does not tell)."""
    return {"id": container_id, "name": name, "state": state, "pid": pid}


def _fake_crictl(
    directory: Path, api: Supervised, containers: List[Dict[str, Any]], **fail: Any
) -> Path:
    """Write a crictl stand-in into directory; return its argv log."""
    directory.mkdir(exist_ok=True)
    spec = directory / "crictl.json"
    spec.write_text(
        json.dumps({"containers": containers, "fail": fail, "supervisor": api.process.pid})
    )
    log = directory / "crictl.log"
    _script(
        directory / "crictl",
        _FAKE_CRICTL.format(spec=str(spec), log=str(log), state=str(api.state_dir)),
    )
    return log


def _calls(log: Path) -> List[List[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_static_pod_with_crictl_stops_the_container_running_the_pid(
    supervisors: Supervisors, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api = supervisors.start()
    bin_dir = tmp_path / "bin"
    log = _fake_crictl(
        bin_dir,
        api,
        [
            _container(PROXY_ID, "kube-apiserver-proxy", "child"),
            _container(EXITED_ID, "kube-apiserver", "child", state="CONTAINER_EXITED"),
            _container(APISERVER_ID, "kube-apiserver", "child"),
        ],
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    old = _process(api)
    old_not_after = _not_after(api)

    result = restart_static_pod(old, timeout=10, runtime_endpoint="unix:///run/containerd.sock")

    assert result.ok, result.detail
    assert result.detail == f"crictl stop 3f2a000000000…: exit 0 (container PID {old.pid})"
    endpoint = ["--runtime-endpoint", "unix:///run/containerd.sock"]
    calls = _calls(log)
    # By kubelet's labels, not --name (an unanchored regular expression).
    assert calls[0] == [
        *endpoint,
        "ps",
        "--label",
        "io.kubernetes.container.name=kube-apiserver",
        "--label",
        "io.kubernetes.pod.namespace=kube-system",
        "-q",
    ]
    assert calls[1:3] == [
        [*endpoint, "inspect", "-o", "json", PROXY_ID],
        [*endpoint, "inspect", "-o", "json", APISERVER_ID],
    ]
    assert calls[3][:3] == [*endpoint, "stop"]
    assert calls[3][3] == "--timeout" and 1 <= int(calls[3][4]) <= 5
    assert calls[3][5:] == [APISERVER_ID]
    api.wait_for_child(other_than=old.pid)
    assert _not_after(api) > old_not_after


@pytest.mark.parametrize(
    ("containers", "stopped", "expected"),
    [
        # The container's main process is a parent of the apiserver (a wrapper).
        (
            [_container(APISERVER_ID, "kube-apiserver", "supervisor")],
            True,
            [
                "crictl stop 3f2a000000000…: exit 0 "
                "(container PID {supervisor}, an ancestor of {pid})"
            ],
        ),
        (
            [_container(APISERVER_ID, "kube-apiserver", "none")],
            True,
            [
                "crictl stop 3f2a000000000…: exit 0 "
                "(the only running container of that name; crictl gave no PID)"
            ],
        ),
        # Two candidates, neither known to run the apiserver: stop neither.
        (
            [
                _container(PROXY_ID, "kube-apiserver", "self"),
                _container(APISERVER_ID, "kube-apiserver", "none"),
            ],
            False,
            [
                "no running container named kube-apiserver runs PID {pid} (container PIDs ",
                ", ?); no container stopped",
            ],
        ),
    ],
    ids=["ancestor", "only-one-without-pid", "no-match"],
)
def test_crictl_container_choice(
    supervisors: Supervisors,
    tmp_path: Path,
    containers: List[Dict[str, Any]],
    stopped: bool,
    expected: List[str],
) -> None:
    api = supervisors.start()
    log = _fake_crictl(tmp_path, api, containers)
    old = _process(api)

    result = restart_static_pod(old, timeout=10, crictl=str(tmp_path / "crictl"))

    assert result.ok == stopped
    for fragment in expected:
        assert fragment.format(pid=old.pid, supervisor=api.process.pid) in result.detail
    stops = [call for call in _calls(log) if call[0] == "stop"]
    assert [call[-1] for call in stops] == ([APISERVER_ID] if stopped else [])
    if not stopped:
        assert api.child_pid() == old.pid


def test_crictl_failure_is_reported_with_its_message(spawn: Spawn, tmp_path: Path) -> None:
    port = closed_port()
    spawn("kube-apiserver", f"--secure-port={port}")
    process = ProcessFinder().find("kube-apiserver", port).process
    assert process is not None
    tool = _script(
        tmp_path / "crictl",
        'import sys\nsys.stderr.write("connect: connect endpoint '
        "'unix:///run/containerd/containerd.sock', make sure you are running as root\\n\")\n"
        "sys.exit(1)\n",
    )

    result = restart_static_pod(process, timeout=5, crictl=tool)

    assert not result.ok
    assert result.detail == (
        "crictl ps (container kube-apiserver in kube-system) exited 1: connect: connect endpoint "
        "'unix:///run/containerd/containerd.sock', make sure you are running as root"
    )


# -- systemd, through a stand-in systemctl -------------------------------------

_FAKE_SYSTEMCTL = """
import json, os, sys, time

with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "pid": os.getpid(),
                          "env": sorted(os.environ)}}) + "\\n")
mode = {mode!r}
if mode == "fail":
    sys.stderr.write("Job for kube-apiserver.service failed because the control process "
                     "exited with error code.\\n")
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
"""


def _fake_systemctl(tmp_path: Path, mode: str) -> Tuple[str, Path]:
    log = tmp_path / "systemctl.log"
    return _script(tmp_path / "systemctl", _FAKE_SYSTEMCTL.format(log=str(log), mode=mode)), log


def test_systemd_restart_runs_systemctl_without_our_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    systemctl, log = _fake_systemctl(tmp_path, "ok")

    result = restart_systemd("kube-apiserver.service", timeout=10, systemctl=systemctl)

    assert result.ok
    assert result.detail == "systemctl restart kube-apiserver.service: exit 0"
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["argv"] == ["--no-ask-password", "restart", "kube-apiserver.service"]
    assert "PATH" in call["env"]
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(call["env"])


def test_systemd_restart_failure_says_why(tmp_path: Path) -> None:
    systemctl, _ = _fake_systemctl(tmp_path, "fail")

    result = restart_systemd("kube-apiserver.service", timeout=10, systemctl=systemctl)

    assert not result.ok
    assert result.detail == (
        "systemctl restart kube-apiserver.service exited 1: Job for kube-apiserver.service "
        "failed because the control process exited with error code."
    )


def test_systemd_restart_timeout_kills_systemctl(tmp_path: Path) -> None:
    systemctl, log = _fake_systemctl(tmp_path, "hang")
    started = time.monotonic()

    result = restart_systemd("kube-apiserver.service", timeout=1, systemctl=systemctl)

    assert time.monotonic() - started < 3
    assert not result.ok
    assert result.detail == (
        "systemctl restart kube-apiserver.service timed out after 1s (process group killed)"
    )
    pid = json.loads(log.read_text())["pid"]
    assert wait_process_gone(pid)


@pytest.mark.parametrize("unit", ["", "--all", "-k"])
def test_systemd_refuses_a_unit_that_reads_as_an_option(unit: str, tmp_path: Path) -> None:
    systemctl, log = _fake_systemctl(tmp_path, "ok")
    result = restart_systemd(unit, timeout=5, systemctl=systemctl)
    assert not result.ok and "invalid unit name" in result.detail
    assert not log.exists()


def test_systemd_without_systemctl(tmp_path: Path) -> None:
    result = restart_systemd("kube-apiserver.service", 5, systemctl=str(tmp_path / "systemctl"))
    assert not result.ok
    assert result.detail == (
        f"systemctl restart kube-apiserver.service: {tmp_path / 'systemctl'} not found"
    )


# -- a command -----------------------------------------------------------------


def test_restart_command_gets_the_context_and_restarts_the_apiserver(
    supervisors: Supervisors, tmp_path: Path
) -> None:
    api = supervisors.start()
    old = _process(api)
    seen = tmp_path / "seen.json"
    script = _script(
        tmp_path / "restart-apiserver",
        "import json, os, signal\n"
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('KLG_')}}, "
        f"open({str(seen)!r}, 'w'))\n"
        "os.kill(int(os.environ['KLG_PID']), signal.SIGTERM)\n"
        "print('sent SIGTERM')\n",
    )
    env = {
        "KLG_TARGET": "kube-apiserver",
        "KLG_PID": str(old.pid),
        "KLG_NOT_AFTER": "2026-12-19T13:00:33Z",
    }

    result = restart_command([script], env, timeout=10)

    assert result.ok, result.detail
    assert result.detail == f"command {script}: exit 0"
    given = json.loads(seen.read_text())
    # The hook also inherits our environment (the suite's KLG_JOURNAL_SOCKET).
    assert {name: given.get(name) for name in env} == env
    api.wait_for_child(other_than=old.pid)


def test_restart_command_needs_a_command() -> None:
    result = restart_command([], {}, timeout=5)
    assert not result.ok and result.detail == "no restart command configured"


def test_restart_command_failure_carries_the_last_line(tmp_path: Path) -> None:
    script = _script(
        tmp_path / "restart-apiserver",
        "import sys\nprint('stopping', flush=True)\nsys.stderr.write('apiserver did not stop\\n\\n')\n"
        "sys.exit(1)\n",
    )
    result = restart_command([script, "--node", "m1"], {}, timeout=5)
    assert not result.ok
    assert result.detail == f"command {script} --node m1 exited 1: apiserver did not stop"


# -- signal (k0s's supervisor respawns a SIGTERMed kube-apiserver) -----------


def test_signal_sigterms_the_verified_pid_and_the_supervisor_respawns_it(
    supervisors: Supervisors,
) -> None:
    api = supervisors.start()
    old = _process(api)
    old_not_after = _not_after(api)

    result = restart_signal(old)

    assert result.ok, result.detail
    assert result.detail == f"sent SIGTERM to PID {old.pid}"
    new_pid = api.wait_for_child(other_than=old.pid)
    assert _process(api).pid == new_pid
    assert _not_after(api) > old_not_after


def test_signal_accepts_start_time_jitter_of_the_same_process(supervisors: Supervisors) -> None:
    # Issue 8.7: psutil >= 7 recomputes the boot time on every create_time(),
    # so the same process may read a fraction of a second off; one definition
    # (agent.model.same_process) accepts that here as in discovery.
    api = supervisors.start()
    live = _process(api)
    jittered = replace(live, started_at=live.started_at + timedelta(milliseconds=600))

    result = restart_signal(jittered)

    assert result.ok, result.detail
    assert api.wait_for_child(other_than=live.pid) != live.pid


def test_signal_never_signals_a_reused_pid(supervisors: Supervisors) -> None:
    api = supervisors.start()
    live = _process(api)
    stale = replace(live, started_at=live.started_at - timedelta(seconds=5))

    result = restart_signal(stale)

    assert not result.ok
    assert result.detail.endswith("not signalled")
    time.sleep(0.3)
    assert api.child_pid() == live.pid


@pytest.mark.parametrize(
    ("method", "kind", "expected"),
    [
        ("auto", "k3s", ("systemd", "k3s")),
        ("auto", "microk8s", ("systemd", "snap.microk8s.daemon-kubelite")),
        ("auto", "k0s", ("signal", "")),
        ("auto", "kubeadm", ("static-pod", "")),
        ("auto", "openshift", ("static-pod", "")),
        ("auto", "", ("systemd", "kube-apiserver.service")),
        ("auto", "pod", ("not-restartable", "")),
        ("systemd", "pod", ("not-restartable", "")),
        ("systemd", "k3s", ("systemd", "kube-apiserver.service")),
        ("signal", "kubeadm", ("signal", "kube-apiserver.service")),
    ],
)
def test_shape_method(method: str, kind: str, expected: Tuple[str, str]) -> None:
    assert shape_method(method, "kube-apiserver.service", kind) == expected
