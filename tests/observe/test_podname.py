"""Stable names of apiservers in pods: cgroup paths of both cgroup drivers,
crictl's JSON, and a stand-in crictl (crictl is not installed here; the
stand-in prints what `crictl ps -o json` prints)."""

from __future__ import annotations

import json
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

from agent.model import ApiserverProcess
from agent.observe.podname import cri_pod_names, parse_cgroup, parse_crictl_ps, pod_name

UID = "0f3c2b1a-1111-2222-3333-444455556666"
CID = "ab" * 32
SYSTEMD = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n"
)
CGROUPFS = f"12:pids:/kubepods/burstable/pod{UID}/{CID}\n0::/\n"


def _process(label: str = "kube-apiserver") -> ApiserverProcess:
    return ApiserverProcess(
        pid=4242,
        name="kube-apiserver",
        started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        secure_port=6443,
        bind_address="10.244.1.17",
        kind="pod",
        label=label,
    )


def test_cgroup_paths_of_both_drivers() -> None:
    assert parse_cgroup(SYSTEMD) == (UID, CID)
    assert parse_cgroup(CGROUPFS) == (UID, CID)
    assert parse_cgroup("0::/user.slice/session-1.scope\n") == (None, None)


def test_name_prefers_cri_labels_then_pod_uid_then_address() -> None:
    cri = {CID: "tenant-a/kube-apiserver-7d9f"}
    assert pod_name(_process(), SYSTEMD, cri) == "tenant-a/kube-apiserver-7d9f"
    assert pod_name(_process(), SYSTEMD, {}) == f"pod-{UID}"
    assert pod_name(_process(), "", {}) == "10.244.1.17:6443"
    assert pod_name(_process("openshift-apiserver"), SYSTEMD, cri) == (
        "tenant-a/kube-apiserver-7d9f/openshift-apiserver"
    )


def test_crictl_json() -> None:
    output = {
        "containers": [
            {
                "id": CID,
                "labels": {
                    "io.kubernetes.pod.namespace": "tenant-a",
                    "io.kubernetes.pod.name": "kube-apiserver-7d9f",
                },
            },
            {"id": "cd" * 32, "labels": {}},
            "junk",
        ]
    }
    assert parse_crictl_ps(json.dumps(output).encode()) == {CID: "tenant-a/kube-apiserver-7d9f"}
    assert parse_crictl_ps(b"not json") == {}
    assert parse_crictl_ps(b"[]") == {}


def test_stand_in_crictl_is_run_once_and_read(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    crictl = tmp_path / "crictl"
    listing = {
        "containers": [
            {
                "id": CID,
                "labels": {
                    "io.kubernetes.pod.namespace": "tenant-b",
                    "io.kubernetes.pod.name": "api-0",
                },
            }
        ]
    }
    crictl.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print({json.dumps(json.dumps(listing))})\n"
    )
    crictl.chmod(crictl.stat().st_mode | stat.S_IXUSR)
    assert cri_pod_names(str(crictl)) == {CID: "tenant-b/api-0"}
    assert calls.read_text() == "ps -o json\n"
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    assert cri_pod_names(str(failing)) == {}
    assert cri_pod_names(str(tmp_path / "absent")) == {}
