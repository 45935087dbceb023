"""The README's test command, verbatim, on the booted Debian 12 with journald
running, as an operator would run it on a master: it passes, and the suite
sends nothing to that journald (every test uses a private journal socket).

Runs after the package tests, in a copy of this checkout inside the container,
in the host's network namespace so that apt and pip reach their registries
(the rest of the container is its own: mounts, PIDs, journald, systemd).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .conftest import Node

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = "/srv/kube-loopback-guard"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def readme_test_command() -> str:
    """The line after the <!-- test-command --> marker's ```sh fence, as .ci/run reads it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    at = lines.index("<!-- test-command -->")
    assert lines[at + 1] == "```sh"
    return lines[at + 2]


def copy_checkout(node: Node) -> None:
    """This checkout's files (tracked and new, not ignored) into CHECKOUT."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        cwd=str(ROOT),
        check=True,
        timeout=60,
    ).stdout
    target = node.machine.path(CHECKOUT)
    if target.exists():
        shutil.rmtree(target)
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_readme_test_command_passes_on_a_booted_debian_with_journald(node: Node) -> None:
    machine = node.machine
    assert machine.run("systemctl", "is-active", "systemd-journald.service").stdout.strip() == (
        "active"
    )
    machine.run("test", "-S", "/run/systemd/journal/socket")
    copy_checkout(node)
    env = {"HOME": "/root"}
    if HOST_CA.exists():  # PyPI may be behind a TLS-inspecting proxy only the host trusts
        shutil.copy(HOST_CA, machine.path("/usr/local/share/host-ca.crt"))
        env["PIP_CERT"] = "/usr/local/share/host-ca.crt"
    cursor = machine.journal_cursor()
    command = readme_test_command()
    # As .ci/run: root, where sudo may be absent.
    script = f'cd {CHECKOUT} && sudo() {{ "$@"; }} && export -f sudo && {command}'
    result = machine.run(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=env,
        host_network=True,
        timeout=2400,
        check=False,
    )
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout, tail
    # The suite's agents (run, restart, reload, plan) logged nothing to the
    # container's journald; only the installed agent's unit may have.
    ours = machine.journal("SYSLOG_IDENTIFIER=kube-loopback-guard", after=cursor)
    from_tests = [r for r in ours if r.get("_SYSTEMD_UNIT") != "kube-loopback-guard.service"]
    assert from_tests == [], [r.get("MESSAGE") for r in from_tests]
