"""Stable names for apiservers that run in pods (hosted control planes).

A tenant apiserver's PID and address change whenever its pod is recreated;
metrics, state and the journal need a name that does not. In order of
preference:

1. `NAMESPACE/POD` from the container runtime's labels
   (`io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`), when `crictl`
   is on PATH: one `crictl ps -o json` per discovery, matched to the process
   by the container ID in its cgroup path;
2. `pod-UID` from the cgroup path (`…/kubepods…/pod<UID>/…`), which kubelet
   sets for every pod, when crictl is missing or does not list the container;
3. `ADDRESS:PORT` of the pod, else `pid-PID`, when neither is available.

A name from the pod's label survives container restarts; the pod UID survives
those too but not the pod's recreation (a rollout), the address neither.
"""

from __future__ import annotations

import re
import subprocess
from typing import Dict, List, Optional, Sequence, Tuple

from agent.model import ApiserverProcess
from agent.record import replace

_CRICTL_TIMEOUT = 5.0
_CRICTL_LIMIT = 4 * 1024 * 1024
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")
_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
_POD_LABEL = "io.kubernetes.pod.name"


def label_pods(
    found: Sequence[ApiserverProcess], proc: str, crictl: Optional[str] = None
) -> List[ApiserverProcess]:
    """Given discovered processes, return them with every pod's label set to
    its stable name (processes on the host keep theirs)."""
    pods = [p for p in found if p.kind == "pod"]
    if not pods:
        return list(found)
    import shutil  # only when a pod was found: not on a plain check

    tool = crictl or shutil.which("crictl")
    labels = cri_pod_names(tool) if tool else {}
    named: List[ApiserverProcess] = []
    for process in found:
        if process.kind == "pod":
            process = replace(process, label=pod_name(process, _cgroup(process.pid, proc), labels))
        named.append(process)
    return named


def pod_name(process: ApiserverProcess, cgroup: str, cri: Dict[str, str]) -> str:
    """Given a process in a pod, its /proc/PID/cgroup text and the CRI's
    container-ID → "namespace/pod" map, return its stable name."""
    uid, container = parse_cgroup(cgroup)
    suffix = "" if process.label in ("", "kube-apiserver") else f"/{process.label}"
    if container is not None and container in cri:
        return cri[container] + suffix
    if uid is not None:
        return f"pod-{uid}{suffix}"
    if process.bind_address:
        return f"{process.bind_address}:{process.secure_port}"
    return f"pid-{process.pid}"


def parse_cgroup(text: str) -> Tuple[Optional[str], Optional[str]]:
    """Given /proc/PID/cgroup, return the pod UID and the container ID in its
    path (either None when absent). Both cgroup drivers are understood:
    `/kubepods/burstable/pod<uid>/<id>` and
    `/kubepods.slice/…/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`.
    """
    uid: Optional[str] = None
    container: Optional[str] = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        match = _POD_UID.search(path)
        if match is not None:
            uid = match.group(1).replace("_", "-")
            tail = path[match.end() :]
            ids = _CONTAINER_ID.findall(tail)
            if ids:
                container = ids[-1]
    return uid, container


def cri_pod_names(crictl: str) -> Dict[str, str]:
    """Given the crictl to run, return container ID → "namespace/pod" for
    every container it lists; empty when crictl fails."""
    try:
        ran = subprocess.run(
            [crictl, "ps", "-o", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=_CRICTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if ran.returncode != 0 or len(ran.stdout) > _CRICTL_LIMIT:
        return {}
    return parse_crictl_ps(ran.stdout)


def parse_crictl_ps(output: bytes) -> Dict[str, str]:
    """Given `crictl ps -o json` output, return container ID → "namespace/pod"."""
    import json  # only here: the check path has no other use for it

    try:
        data = json.loads(output)
    except ValueError:
        return {}
    names: Dict[str, str] = {}
    containers = data.get("containers") if isinstance(data, dict) else None
    for item in containers if isinstance(containers, list) else []:
        if not isinstance(item, dict):
            continue
        labels = item.get("labels")
        container = item.get("id")
        if not isinstance(labels, dict) or not isinstance(container, str):
            continue
        namespace, pod = labels.get(_NAMESPACE_LABEL), labels.get(_POD_LABEL)
        if isinstance(namespace, str) and isinstance(pod, str) and namespace and pod:
            names[container] = f"{namespace}/{pod}"
    return names


def _cgroup(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as handle:
            return handle.read(64 * 1024).decode("utf-8", "replace")
    except OSError:
        return ""
