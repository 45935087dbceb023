"""A throwaway Debian 12 system booted with systemd-nspawn, for the end-to-end tests.

The cached rootfs (tests/e2e/rootfs) is never booted itself: each session gets
an overlay (upper layer in a work directory) on top of it, or a copy where
overlayfs is unavailable. Before boot, the .deb's Debian dependencies are
installed from the archive with `apt-get satisfy` (network shared, not booted);
the container then boots with --private-network, so it has a loopback of its
own: the stand-in kube-apiserver listens on the real 127.0.0.1:6443 there,
the agent runs with its shipped defaults, and nothing touches the host's ports.
`apt-get install ./pkg.deb` in the booted system then resolves every
dependency from what Debian's archive provided, offline, and its maintainer
scripts talk to a real systemd.

Commands run inside with nsenter into the container's namespaces. Every wait is
bounded; teardown powers the container off (SIGTERM, then SIGKILL, to the
nspawn process this module started, by PID) and removes the work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

WORK_PREFIX = "klg-e2e."
WORK_BASE = Path("/var/tmp")
# Where packages are put inside the container (readable by apt's _apt user).
PACKAGE_DIR = "/srv/klg-e2e"
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_URLIFY": "0",
    "DEBIAN_FRONTEND": "noninteractive",
}


# Set by conftest to write past pytest's capture, so progress shows as it happens.
LOG_SINK: Optional[Callable[[str], None]] = None


def log(message: str) -> None:
    """Progress for the person watching a long fixture."""
    line = f"[e2e {time.strftime('%H:%M:%S')}] {message}\n"
    if LOG_SINK is not None:
        LOG_SINK(line)
    else:
        sys.stderr.write(line)
        sys.stderr.flush()


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float, every: float = 0.5) -> T:
    """Call probe until it returns something true (not None, False or empty);
    return it.
    Raise AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:  # None, False and empty collections mean: not yet
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _descendants(root: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: List[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def _ns_pid(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _sequence(cursor: str) -> Tuple[str, int, int]:
    """A journal cursor's sequence number ID, sequence number and wall-clock
    time in microseconds (its s=, i= and t=)."""
    fields = dict(part.split("=", 1) for part in cursor.split(";") if "=" in part)
    return fields.get("s", ""), int(fields.get("i", "0"), 16), int(fields.get("t", "0"), 16)


def _is_after(record: Tuple[str, int, int], cursor: Tuple[str, int, int]) -> bool:
    if record[0] == cursor[0]:
        return record[1] > cursor[1]
    # Sequence numbers of two journal file series do not compare: use the time.
    return record[2] > cursor[2]


def cleanup_stale(base: Path = WORK_BASE) -> None:
    """Remove work directories of earlier sessions whose nspawn has exited
    (a killed test run). Live ones (another run) are left alone."""
    for work in base.glob(WORK_PREFIX + "*"):
        pid_file = work / "nspawn.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm == "systemd-nspawn":
                continue
        _unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)


def _unmount_below(path: Path) -> None:
    prefix = str(path) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


class Machine:
    """One booted container. Use start() then close(), or as a context manager."""

    def __init__(self, rootfs: Path, name: str = "klg-e2e") -> None:
        self.rootfs = rootfs
        self.name = name
        self.work = Path(
            subprocess.check_output(
                ["mktemp", "-d", str(WORK_BASE / (WORK_PREFIX + "XXXXXX"))], text=True
            ).strip()
        )
        self.root = self.work / "root"
        self.console_log = self.work / "console.log"
        self._nspawn: Optional[subprocess.Popen[bytes]] = None
        self._console: Optional[IO[bytes]] = None
        self.leader: Optional[int] = None
        self.overlay = False

    # -- setting up ------------------------------------------------------------

    def create_root(self) -> None:
        """An overlay over the cached rootfs; a full copy if overlayfs fails."""
        for sub in ("upper", "ovl-work", "root"):
            (self.work / sub).mkdir()
        upper, work = self.work / "upper", self.work / "ovl-work"
        options = f"lowerdir={self.rootfs},upperdir={upper},workdir={work}"
        result = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            self.overlay = True
            return
        log(f"overlayfs unavailable ({result.stderr.strip()}); copying the rootfs")
        self.root.rmdir()
        subprocess.run(["cp", "-a", str(self.rootfs), str(self.root)], check=True)

    def prepare_offline(self, argv: Sequence[str], timeout: float = 600) -> str:
        """Run argv in the not yet booted tree with the host's network (apt)."""
        result = subprocess.run(
            [
                "systemd-nspawn",
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--pipe",
                f"--directory={self.root}",
                f"--machine={self.name}-prep",
                *[f"--setenv={k}={v}" for k, v in CONTAINER_ENV.items()],
                "--",
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def install_dependencies(self, deb: Path) -> None:
        """Given a .deb, install its Depends from Debian's archive (host network)."""
        depends = subprocess.check_output(["dpkg-deb", "-f", str(deb), "Depends"], text=True)
        depends = depends.strip()
        if not depends:
            return
        # With the cached lists first; refreshed only when they are too old
        # (a package no longer on the mirror) or lack something.
        satisfy = 'apt-get satisfy -y -q --no-install-recommends "$1"'
        script = f"{satisfy} >/dev/null 2>&1 || {{ apt-get update -q >/dev/null && {satisfy}; }}"
        self.prepare_offline(["/bin/sh", "-ec", script, "sh", depends])

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the container (from the host, through its root)."""
        path = self.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def path(self, inside: str) -> Path:
        """The host path of a path inside the container."""
        return self.root / inside.lstrip("/")

    # -- boot and shutdown -------------------------------------------------------

    def boot(self, timeout: float = 120) -> None:
        """Boot systemd in the tree with a private network; wait until it is up."""
        console = open(self.console_log, "wb")  # noqa: SIM115 - kept open while it runs
        self._console = console
        self._nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=pipe",
                f"--directory={self.root}",
                f"--machine={self.name}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.work / "nspawn.pid").write_text(str(self._nspawn.pid))
        assert self._nspawn is not None
        nspawn = self._nspawn

        def leader() -> Optional[int]:
            if nspawn.poll() is not None:
                raise AssertionError(
                    f"systemd-nspawn exited with {nspawn.returncode}:\n{self.console_text()}"
                )
            for pid in _descendants(nspawn.pid):
                ns = _ns_pid(pid)
                if len(ns) >= 2 and ns[-1] == 1:
                    return pid
            return None

        self.leader = wait_for("the container's PID 1", leader, 30, every=0.1)

        def running() -> Optional[str]:
            result = self.run(
                "systemctl", "is-system-running", "--wait", check=False, timeout=timeout
            )
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return state
            return None

        state = wait_for("the container's systemd to finish booting", running, timeout)
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise AssertionError(f"the container booted degraded:\n{failed}")

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Power off (bounded), then SIGTERM/SIGKILL our nspawn; unmount and remove."""
        nspawn = self._nspawn
        if nspawn is not None and nspawn.poll() is None:
            if self.leader is not None:
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=15)
            try:
                nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("container did not power off in 30s; SIGTERM to systemd-nspawn")
                nspawn.send_signal(signal.SIGTERM)
                try:
                    nspawn.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    log("SIGKILL to systemd-nspawn")
                    nspawn.kill()
                    nspawn.wait(timeout=15)
        if self._console is not None:
            self._console.close()
        if os.environ.get("KLG_E2E_KEEP") == "1":
            log(f"KLG_E2E_KEEP=1: leaving {self.work}")
            return
        _unmount_below(self.work)
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running things inside -----------------------------------------------------

    def command(
        self,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        host_network: bool = False,
    ) -> List[str]:
        """The host command line that runs argv inside the container (in the
        host's network namespace when host_network: to reach a package
        registry from the booted system)."""
        assert self.leader is not None, "the container is not booted"
        variables = {**CONTAINER_ENV, **(env or {})}
        return [
            "nsenter",
            f"--target={self.leader}",
            "--mount",
            "--uts",
            "--ipc",
            *([] if host_network else ["--net"]),
            "--pid",
            "--root",
            "--wd",
            "--",
            "/usr/bin/env",
            "-i",
            *[f"{k}={v}" for k, v in variables.items()],
            *argv,
        ]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 120,
        input: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        host_network: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside; return the result (raise on non-zero exit when check)."""
        try:
            result = subprocess.run(
                self.command(argv, env, host_network),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(
                f"in the container, {' '.join(argv)} did not finish in {timeout:.0f}s; "
                f"output so far: {expired.stdout!r} {expired.stderr!r}"
            ) from None
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container, {' '.join(argv)} exited {result.returncode}:\n"
                f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
            )
        return result

    def python(self, code: str, *args: str) -> str:
        """Run Python code inside with the system python3; return its stdout."""
        return self.run("python3", "-c", code, *args).stdout

    # -- systemd and the journal ------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> Dict[str, str]:
        """systemctl show UNIT -p P...: the properties as a dict."""
        out = self.run("systemctl", "show", unit, *[f"--property={p}" for p in properties]).stdout
        values: Dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        return values

    def journal_cursor(self) -> str:
        """A cursor at the journal's current end (records after it are new)."""
        out = self.run("journalctl", "--no-pager", "-n", "1", "-o", "json").stdout
        lines = [line for line in out.splitlines() if line.strip()]
        cursor: str = json.loads(lines[-1])["__CURSOR"]
        return cursor

    def journal(self, *args: str, after: Optional[str] = None) -> List[Dict[str, str]]:
        """journalctl ARGS -o json, parsed (one dict per record); only the
        records after the cursor `after` when given.

        The cursor is applied here, not with --after-cursor: systemd 252's
        journalctl drops records with it when there are matches too.
        """
        out = self.run("journalctl", "--no-pager", "-o", "json", *args).stdout
        records = []
        since = _sequence(after) if after else None
        for line in out.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if since is not None and not _is_after(_sequence(record["__CURSOR"]), since):
                continue
            # Binary-safe fields come as byte arrays; decode them for the tests.
            for key, value in record.items():
                if isinstance(value, list) and all(isinstance(b, int) for b in value):
                    record[key] = bytes(value).decode("utf-8", "replace")
            records.append(record)
        return records

    def unit_records(
        self, unit: str, message_id: Optional[str] = None, after: Optional[str] = None
    ) -> List[Dict[str, str]]:
        """The unit's records (after the cursor), with that MESSAGE_ID if given.

        MESSAGE_ID is filtered here, not by journalctl (see journal()).
        """
        records = self.journal("-u", unit, after=after)
        if message_id is None:
            return records
        return [r for r in records if r.get("MESSAGE_ID") == message_id]
