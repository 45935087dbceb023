"""Package life cycle with apt on the booted system: upgrades keep the admin's
conffile, purge leaves nothing behind. Runs last (purge removes the package)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from agent.report.events import MESSAGE_IDS, EventKind

from .conftest import AGENT, APISERVER, BASE_CONFIG, CONFIG, MODULE_DIR, Node
from .machine import PACKAGE_DIR

PACKAGE = "kube-loopback-guard"
STARTED = MESSAGE_IDS[EventKind.AGENT_STARTED]
CONFFILE = CONFIG.lstrip("/")


def repack(deb: Path, version: str, work: Path, shipped_config_extra: str = "") -> Path:
    """Given the built .deb, return a copy with another version (and, when
    asked, a changed shipped conffile): a stand-in for the next release."""
    tree = work / f"tree-{version}"
    if tree.exists():
        shutil.rmtree(tree)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", control.read_text()))
    if shipped_config_extra:
        conffile = tree / CONFFILE
        conffile.write_text(conffile.read_text() + shipped_config_extra)
        md5sums = tree / "DEBIAN" / "md5sums"
        if md5sums.exists() and CONFFILE in md5sums.read_text():
            digest = hashlib.md5(conffile.read_bytes()).hexdigest()  # dpkg's md5sums
            md5sums.write_text(
                re.sub(rf"(?m)^\S+(  {re.escape(CONFFILE)})$", rf"{digest}\1", md5sums.read_text())
            )
    out = work / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def _install(node: Node, deb: Path, *apt_options: str) -> str:
    shutil.copy(deb, node.machine.path(f"{PACKAGE_DIR}/{deb.name}"))
    result = node.machine.run(
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        *apt_options,
        f"{PACKAGE_DIR}/{deb.name}",
        timeout=300,
    )
    return result.stdout + result.stderr


def _installed_version(node: Node) -> str:
    return node.machine.run("dpkg-query", "-W", "-f", "${Version}", PACKAGE).stdout


def test_upgrade_keeps_the_changed_conffile(node: Node, tmp_path: Path) -> None:
    machine = node.machine
    assert machine.path(CONFIG).read_text() == BASE_CONFIG, "the admin's change is in place"
    pid = node.main_pid(AGENT)
    cursor = machine.journal_cursor()

    # The next release ships the same conffile: the admin's copy stays, silently.
    first = repack(node.deb, f"{node.version}+e2e1", tmp_path)
    out = _install(node, first)
    assert f"Unpacking {PACKAGE} ({node.version}+e2e1) over ({node.version})" in out, out
    assert _installed_version(node) == f"{node.version}+e2e1"
    assert machine.path(CONFIG).read_text() == BASE_CONFIG
    leftovers = sorted(p.name for p in machine.path(CONFIG).parent.iterdir())
    assert leftovers == ["config.toml"], leftovers
    # The upgrade restarted the agent on the new code, with the admin's config.
    state = machine.show(AGENT, "ActiveState", "SubState", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert int(state["MainPID"]) != pid
    started = machine.unit_records(AGENT, STARTED, after=cursor)
    assert len(started) == 1 and "every 3s" in started[0]["MESSAGE"], started
    node.wait_status("kube-apiserver: WARNING")

    # The release after changes the shipped conffile too: with apt's usual
    # --force-confold the admin's copy stays, the new one lands beside it.
    second = repack(
        node.deb, f"{node.version}+e2e2", tmp_path, "\n# A comment from a later release.\n"
    )
    _install(
        node,
        second,
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    )
    assert _installed_version(node) == f"{node.version}+e2e2"
    assert machine.path(CONFIG).read_text() == BASE_CONFIG
    dist = machine.path(CONFIG + ".dpkg-dist")
    assert dist.is_file() and "A comment from a later release." in dist.read_text()
    node.wait_status("kube-apiserver: WARNING")


def test_purge_removes_the_unit_cleanly(node: Node) -> None:
    machine = node.machine
    # The stand-in apiserver runs from the package's modules: stop it first.
    machine.systemctl("disable", "--now", APISERVER)
    pid = node.main_pid(AGENT)
    out = machine.run("apt-get", "purge", "-y", PACKAGE, timeout=300)
    text = out.stdout + out.stderr
    assert f"Purging configuration files for {PACKAGE}" in text, text

    assert machine.run("dpkg-query", "-W", PACKAGE, check=False).returncode != 0 or (
        machine.run("dpkg-query", "-W", "-f", "${Status}", PACKAGE).stdout
        == "unknown ok not-installed"
    )
    shown = machine.show(AGENT, "LoadState", "ActiveState")
    assert shown == {"LoadState": "not-found", "ActiveState": "inactive"}, shown
    cmdline = machine.run("cat", f"/proc/{pid}/cmdline", check=False).stdout
    assert "kube-loopback-guard" not in cmdline, "the agent process outlived the purge"
    for gone in (
        "/lib/systemd/system/kube-loopback-guard.service",
        "/usr/lib/systemd/system/kube-loopback-guard.service",
        "/etc/systemd/system/multi-user.target.wants/kube-loopback-guard.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/kube-loopback-guard.service.dsh-also",
        "/etc/kube-loopback-guard",
        "/var/lib/kube-loopback-guard",
        MODULE_DIR,
        "/usr/bin/kube-loopback-guard",
        "/usr/lib/systemd/catalog/kube-loopback-guard.catalog",
    ):
        assert not machine.path(gone).exists(), f"{gone} is left after purge"
    units = machine.run(
        "systemctl", "list-unit-files", "--no-legend", "kube-loopback-guard*", check=False
    )
    assert units.stdout.strip() == "", units.stdout
    failed = machine.run("systemctl", "--failed", "--no-legend").stdout
    assert failed.strip() == "", failed
    # journald's catalog database forgets our entries (systemd's dpkg trigger).
    listed = machine.run("journalctl", "--list-catalog").stdout
    leftover = [i for i in MESSAGE_IDS.values() if i in listed]
    assert not leftover, f"catalog entries left: {leftover}"
