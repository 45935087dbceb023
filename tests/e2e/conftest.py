"""End-to-end tests on a real systemd: the built .deb installed with apt into a
booted Debian 12 container, next to a stand-in kube-apiserver.service.

They boot a container, so they run only when asked: `KLG_E2E=1 pytest tests/e2e`
(tests/e2e/run does that, building the package and the rootfs cache first).
Otherwise, including under a plain `pytest`, every test here is skipped at once.

Needs root, systemd-nspawn (systemd-container), debootstrap, dpkg-deb and
nsenter. The package: $KLG_DEB, else the newest dist/*.deb.
ONE container serves the whole session (booting is the slow part); the test
modules run in file order, and each restores what it changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from . import machine as machine_module
from .machine import PACKAGE_DIR, Machine, cleanup_stale, log, wait_for

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("KLG_E2E") == "1"

AGENT = "kube-loopback-guard.service"
APISERVER = "kube-apiserver.service"
CONFIG = "/etc/kube-loopback-guard/config.toml"
# Where packaging/debian/rules puts the agent's modules.
MODULE_DIR = "/usr/lib/kube-loopback-guard"
APISERVER_PORT = 6443
LIFETIME_DAYS = 20

# The admin's change to the shipped conffile: check every few seconds so that
# the tests need not wait five minutes. Everything else stays at the defaults.
BASE_CONFIG = """\
# kube-loopback-guard end-to-end tests: the shipped defaults, checked often.
interval = "3s"
"""

# A stand-in kube-apiserver as a binary install runs it: a process whose comm
# is kube-apiserver (a symlink to python3), with kube-apiserver's flags, a new
# upstream-shaped loopback certificate (20 days long) at each start.
APISERVER_UNIT = f"""\
[Unit]
Description=Stand-in kube-apiserver for kube-loopback-guard's end-to-end tests

[Service]
Environment=PYTHONPATH={MODULE_DIR}
Environment=PYTHONDONTWRITEBYTECODE=1
ExecStart=/usr/local/bin/kube-apiserver -m agent.standin \\
    --secure-port={APISERVER_PORT} --bind-address=127.0.0.1 \\
    --lifetime {LIFETIME_DAYS}d --key-type ec \\
    --etcd-servers=https://127.0.0.1:2379 --authorization-mode=Node,RBAC
Restart=always
RestartSec=1s

[Install]
WantedBy=multi-user.target
"""

# Reads the certificate that 127.0.0.1:6443 serves for SNI
# apiserver-loopback-client, independently of the agent.
_READ_CERT = """
import hashlib, json, socket, ssl, sys
from cryptography import x509
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname="apiserver-loopback-client") as tls:
        der = tls.getpeercert(binary_form=True)
cert = x509.load_der_x509_certificate(der)
print(json.dumps({
    "subject": cert.subject.rfc4514_string(),
    "issuer": cert.issuer.rfc4514_string(),
    "not_before": cert.not_valid_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "not_after": cert.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "sha256": hashlib.sha256(der).hexdigest(),
}))
"""


def pytest_configure(config: pytest.Config) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        return

    def sink(line: str) -> None:
        with capture.global_and_fixture_disabled():
            sys.stderr.write(line)
            sys.stderr.flush()

    machine_module.LOG_SINK = sink


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(
        reason="end-to-end tests boot a container: run tests/e2e/run (or KLG_E2E=1 as root)"
    )
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def find_deb() -> Path:
    given = os.environ.get("KLG_DEB")
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"KLG_DEB={given}: no such file")
        return path.resolve()
    debs = sorted((ROOT / "dist").glob("kube-loopback-guard_*_all.deb"), key=os.path.getmtime)
    if not debs:
        pytest.fail("no dist/kube-loopback-guard_*_all.deb: run packaging/build-deb or set KLG_DEB")
    return debs[-1].resolve()


@dataclass
class Cert:
    subject: str
    issuer: str
    not_before: str
    not_after: str
    sha256: str


@dataclass
class Node:
    """The booted container with the package installed, and what the install said."""

    machine: Machine
    deb: Path
    version: str
    install_output: str
    status_after_install: Dict[str, str]

    def cert(self) -> Cert:
        """The loopback certificate the stand-in serves now, read without the agent."""
        out = self.machine.python(_READ_CERT, str(APISERVER_PORT))
        return Cert(**json.loads(out))

    def write_config(self, text: str) -> None:
        self.machine.write(CONFIG, text)

    def status_text(self) -> str:
        return self.machine.show(AGENT, "StatusText")["StatusText"]

    def wait_status(self, prefix: str, timeout: float = 60) -> str:
        """Wait until the agent's STATUS= starts with prefix; return it."""

        def matches() -> Optional[str]:
            text = self.status_text()
            return text if text.startswith(prefix) else None

        try:
            return wait_for(f"{AGENT} status {prefix!r}", matches, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; status is {self.status_text()!r}") from None

    def main_pid(self, unit: str) -> int:
        return int(self.machine.show(unit, "MainPID")["MainPID"])

    def restore_base(self) -> None:
        """Back to BASE_CONFIG, reloaded, in WARNING (20-day certificate).

        When the reload does not get there, restart the agent so that the
        next tests start clean, and still fail the current one.
        """
        self.write_config(BASE_CONFIG)
        try:
            self.machine.systemctl("reload", AGENT)
            self.wait_status("kube-apiserver: WARNING", timeout=30)
        except AssertionError:
            self.machine.systemctl("restart", AGENT, check=False)
            self.wait_status("kube-apiserver: WARNING", timeout=30)
            raise


def _check_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests need root (systemd-nspawn, mount, nsenter)")
    tools = ("systemd-nspawn", "nsenter", "dpkg-deb", "debootstrap")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: apt-get install systemd-container debootstrap "
            "(tests/e2e/run does)"
        )


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    """Boot ONE container for the session, install the package with apt, start
    the stand-in apiserver, switch the agent to BASE_CONFIG."""
    _check_tools()
    deb = find_deb()
    version = subprocess.check_output(["dpkg-deb", "-f", str(deb), "Version"], text=True).strip()
    started = time.monotonic()
    cleanup_stale()
    rootfs = Path(
        subprocess.run(
            ["bash", str(HERE / "rootfs")], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
    )
    machine = Machine(rootfs)
    try:
        machine.create_root()
        log(f"work dir {machine.work} (overlay: {machine.overlay})")
        machine.install_dependencies(deb)
        log(f"dependencies of {deb.name} installed from Debian ({time.monotonic() - started:.0f}s)")
        machine.write(f"/etc/systemd/system/{APISERVER}", APISERVER_UNIT)
        link = machine.path("/usr/local/bin/kube-apiserver")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/usr/bin/python3")
        machine.boot()
        log(f"booted ({time.monotonic() - started:.0f}s)")

        machine.path(PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, machine.path(f"{PACKAGE_DIR}/{deb.name}"))
        install = machine.run(
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            f"{PACKAGE_DIR}/{deb.name}",
            check=False,
            timeout=300,
        )
        install_output = install.stdout + install.stderr
        if install.returncode != 0:
            pytest.fail(f"apt-get install {deb.name} failed:\n{install_output}")
        # What the package alone did: enabled and started the agent, which
        # finds no apiserver yet.
        status_after_install = {
            **machine.show(AGENT, "ActiveState", "SubState", "UnitFileState", "StatusText"),
        }
        node = Node(machine, deb, version, install_output, status_after_install)

        machine.systemctl("enable", "--now", APISERVER)
        wait_for("the stand-in apiserver to serve", lambda: _serving(node), 30)
        node.write_config(BASE_CONFIG)
        machine.systemctl("restart", AGENT)
        node.wait_status("kube-apiserver: WARNING")
        log(f"node ready ({time.monotonic() - started:.0f}s)")
        yield node
    finally:
        if machine.leader is not None:
            _save_journal(machine)
        machine.close()
        log(f"container removed ({time.monotonic() - started:.0f}s in all)")


def _serving(node: Node) -> bool:
    try:
        node.cert()
    except AssertionError:
        return False
    return True


def _save_journal(machine: Machine) -> None:
    """The container's whole journal, for a failed run's post-mortem."""
    target = Path(os.environ.get("KLG_E2E_LOG", "/var/tmp/klg-e2e-journal.txt"))
    try:
        out = machine.run(
            "journalctl", "--no-pager", "-b", "-o", "short-precise", check=False, timeout=60
        ).stdout
        target.write_text(out)
        log(f"container journal saved to {target}")
    except (OSError, subprocess.SubprocessError, AssertionError) as error:
        log(f"could not save the container journal: {error}")
