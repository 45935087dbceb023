"""The installed agent under a real systemd: status, journal, catalog, reload,
watchdog, sandboxing. Runs first (file order); leaves BASE_CONFIG in force."""

from __future__ import annotations

import re
import time

import pytest

from agent.report.events import MESSAGE_IDS, EventKind

from .conftest import AGENT, APISERVER, BASE_CONFIG, CONFIG, LIFETIME_DAYS, Node
from .machine import wait_for

# The bound we hold the shipped unit to (systemd-analyze's scale: 0 best, 10 worst);
# tests/test_unit.py checks the same offline.
MAX_EXPOSURE = 2.5

STARTED = MESSAGE_IDS[EventKind.AGENT_STARTED]
CHANGED = MESSAGE_IDS[EventKind.STATE_CHANGED]
RELOADED = MESSAGE_IDS[EventKind.CONFIG_RELOADED]
REJECTED = MESSAGE_IDS[EventKind.CONFIG_REJECTED]
STOPPING = MESSAGE_IDS[EventKind.AGENT_STOPPING]


def _day(stamp: str) -> str:
    return stamp[:10]


def test_apt_install_enables_and_starts_the_agent(node: Node) -> None:
    out = node.install_output
    assert f"Setting up kube-loopback-guard ({node.version})" in out, out
    assert "multi-user.target.wants/kube-loopback-guard.service" in out, out
    # deb-systemd-invoke says this when `systemctl start` failed.
    assert "Could not execute systemctl" not in out, out
    after = node.status_after_install
    assert (after["ActiveState"], after["SubState"], after["UnitFileState"]) == (
        "active",
        "running",
        "enabled",
    ), after
    # Before any apiserver runs, it says so instead of guessing.
    assert after["StatusText"].startswith("kube-apiserver: UNKNOWN"), after
    assert "no apiserver process found on this node" in after["StatusText"], after
    dpkg = node.machine.run("dpkg-query", "-W", "-f", "${Status} ${Version}", "kube-loopback-guard")
    assert dpkg.stdout == f"install ok installed {node.version}"
    assert node.machine.systemctl("is-system-running", check=False).stdout.strip() == "running"


def test_systemctl_status_names_state_and_expiry(node: Node) -> None:
    cert = node.cert()
    assert re.fullmatch(r"CN=apiserver-loopback-client@\d+", cert.subject), cert
    status = node.machine.systemctl("status", AGENT)
    print(status.stdout)
    assert status.returncode == 0
    assert re.search(r"(?m)^\s+Active: active \(running\)", status.stdout), status.stdout
    match = re.search(
        r'(?m)^\s+Status: "kube-apiserver: WARNING, loopback cert expires '
        r'(\d{4}-\d\d-\d\d) \((\d+) days\)"$',
        status.stdout,
    )
    assert match, status.stdout
    assert match.group(1) == _day(cert.not_after)
    # A 20-day certificate generated an hour ago (NotBefore = start - 1 h).
    assert int(match.group(2)) == LIFETIME_DAYS - 1
    # The agent's own view agrees with the certificate read independently.
    check = node.machine.run("kube-loopback-guard", "check", "--json", check=False)
    assert check.returncode == 1, check.stdout + check.stderr  # WARNING
    assert f'"sha256": "{cert.sha256}"' in check.stdout
    assert f'"pid": {node.main_pid(APISERVER)}' in check.stdout


def test_journal_has_structured_records_with_message_ids(node: Node) -> None:
    records = node.machine.unit_records(AGENT)
    ids = {r.get("MESSAGE_ID") for r in records} - {None}
    # Every MESSAGE_ID the agent sent is one of ours (systemd's own records
    # about the unit carry systemd's IDs, filtered out by the sender).
    ours = {r["MESSAGE_ID"] for r in records if r.get("SYSLOG_IDENTIFIER") == "kube-loopback-guard"}
    assert ours <= set(MESSAGE_IDS.values()), ours - set(MESSAGE_IDS.values())
    assert {STARTED, CHANGED} <= ids, ids

    started = [r for r in records if r.get("MESSAGE_ID") == STARTED]
    assert started[-1]["CONFIG_FILE"] == CONFIG
    assert started[-1]["_SYSTEMD_UNIT"] == AGENT
    assert started[-1]["PRIORITY"] == "6"

    # The first start, right after install: no apiserver yet, so nothing is
    # probed (a node may run something else on 6443); the record says why.
    first = next(r for r in records if r.get("MESSAGE_ID") == CHANGED)
    assert first["TARGET"] == "kube-apiserver"
    assert first["STATE"] == "unknown"
    assert "no apiserver process found on this node" in first["MESSAGE"], first

    cert = node.cert()
    warning = [
        r for r in records if r.get("MESSAGE_ID") == CHANGED and r.get("STATE") == "warning"
    ][-1]
    assert warning["TARGET"] == "kube-apiserver"
    assert warning["PREVIOUS_STATE"] in ("none", "unknown")
    assert warning["SOURCE"] == "probe"
    assert warning["CERT_NOT_AFTER"] == cert.not_after
    assert warning["CERT_NOT_BEFORE"] == cert.not_before
    assert warning["CERT_SHA256"] == cert.sha256
    assert warning["PROCESS_PID"] == str(node.main_pid(APISERVER))
    assert warning["PROBE_ENDPOINT"] == "127.0.0.1:6443"
    assert warning["PRIORITY"] == "4"
    seconds_left = int(warning["CERT_SECONDS_LEFT"])
    assert (LIFETIME_DAYS - 1) * 86400 - 600 < seconds_left <= LIFETIME_DAYS * 86400 - 3600
    assert warning["MESSAGE"].startswith("kube-apiserver: ") and "WARNING" in warning["MESSAGE"]
    # One record per change, not one per check (it checks every 3 s).
    changes = [r for r in records if r.get("MESSAGE_ID") == CHANGED]
    assert len(changes) <= 2 * len(started), [r["MESSAGE"] for r in changes]


def test_journalctl_x_shows_the_catalog(node: Node) -> None:
    out = node.machine.run(
        "journalctl", "--no-pager", "-x", "-u", AGENT, f"MESSAGE_ID={CHANGED}"
    ).stdout
    assert "░░ Subject: kube-apiserver: loopback certificate is now warning (was " in out, out
    assert "░░ Defined-By: kube-loopback-guard" in out
    assert "░░ kube-loopback-guard checked the apiserver target kube-apiserver and its state" in out
    # Fields substituted into the body.
    cert = node.cert()
    assert f"Certificate expires (CERT_NOT_AFTER):  {cert.not_after}" in out
    # Every MESSAGE_ID has its entry in journald's catalog database.
    listed = node.machine.run("journalctl", "--list-catalog").stdout
    for kind, message_id in MESSAGE_IDS.items():
        assert message_id in listed, f"{kind.value} ({message_id}) missing from the catalog"


def test_reload_rereads_the_config(node: Node) -> None:
    pid = node.main_pid(AGENT)
    cursor = node.machine.journal_cursor()
    # 19 days left: OK once warning is 10d.
    node.write_config(BASE_CONFIG + '[thresholds]\nwarning = "10d"\ncritical = "5d"\n')
    # As on a minimal Debian without procps: reload must not need /bin/kill.
    find_kill = 'for p in /bin/kill /usr/bin/kill; do [ -e "$p" ] && readlink -f "$p"; done'
    kill = sorted(set(node.machine.run("sh", "-c", find_kill + "; true").stdout.split()))
    assert kill, "the rootfs has procps' kill, so moving it away proves something"
    for path in kill:
        node.machine.run("mv", path, path + ".e2e-away")
    try:
        node.machine.systemctl("reload", AGENT)
        status = node.wait_status("kube-apiserver: OK")
        assert "loopback cert expires" in status
        assert node.main_pid(AGENT) == pid, "reload must not restart the process"
        reloaded = node.machine.unit_records(AGENT, RELOADED, after=cursor)
        assert len(reloaded) == 1, reloaded
        assert reloaded[0]["CONFIG_FILE"] == CONFIG
        changed = node.machine.unit_records(AGENT, CHANGED, after=cursor)
        assert [(r["PREVIOUS_STATE"], r["STATE"]) for r in changed] == [("warning", "ok")]
    finally:
        for path in kill:
            node.machine.run("mv", path + ".e2e-away", path)
        node.restore_base()


def test_broken_config_on_reload_keeps_the_old_one(node: Node) -> None:
    try:
        node.write_config(BASE_CONFIG + '[thresholds]\nwarning = "10d"\ncritical = "5d"\n')
        node.machine.systemctl("reload", AGENT)
        node.wait_status("kube-apiserver: OK")
        pid = node.main_pid(AGENT)
        cursor = node.machine.journal_cursor()
        node.write_config('interval = "3s"\n[thresholds]\nwarning = "10x"\n')
        # ExecReload= validates first: the reload fails, and says why.
        reload = node.machine.systemctl("reload", AGENT, check=False)
        assert reload.returncode != 0, reload
        said = node.machine.journal("-u", AGENT, "--no-hostname", after=cursor)
        lines = [str(r.get("MESSAGE", "")) for r in said]
        assert any("invalid configuration, not reloaded" in line for line in lines), lines
        assert any(f"{CONFIG}: thresholds.warning" in line for line in lines), lines
        rejected = wait_for(
            "the config-rejected record",
            lambda: node.machine.unit_records(AGENT, REJECTED, after=cursor),
            30,
        )
        assert len(rejected) == 1
        assert rejected[0]["CONFIG_FILE"] == CONFIG
        assert "thresholds.warning" in rejected[0]["MESSAGE"], rejected[0]["MESSAGE"]
        # Still running, same process, still judging with the old thresholds
        # (OK under warning = 10d, where the broken file would give WARNING).
        time.sleep(7)  # two more checks
        state = node.machine.show(AGENT, "ActiveState", "SubState", "MainPID", "StatusText")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert int(state["MainPID"]) == pid
        assert state["StatusText"].startswith("kube-apiserver: OK"), state
        assert not node.machine.unit_records(AGENT, STARTED, after=cursor)
        # The CLI points at the problem, with EX_CONFIG.
        config = node.machine.run("kube-loopback-guard", "config", check=False)
        assert config.returncode == 78, config
        assert f"{CONFIG}: thresholds.warning" in config.stderr, config.stderr
    finally:
        node.restore_base()


def test_watchdog_restarts_a_stopped_agent(node: Node) -> None:
    machine = node.machine
    # The shipped WatchdogSec=2min, shortened by a drop-in so the test takes
    # seconds; everything else (Restart=on-failure, RestartSec=10s) as shipped.
    dropin = "/etc/systemd/system/kube-loopback-guard.service.d/e2e-watchdog.conf"
    machine.write(dropin, "[Service]\nWatchdogSec=6s\n")
    try:
        machine.systemctl("daemon-reload")
        machine.systemctl("restart", AGENT)
        node.wait_status("kube-apiserver: WARNING")
        before = machine.show(AGENT, "MainPID", "NRestarts", "WatchdogUSec")
        assert before["WatchdogUSec"] == "6s", before
        pid = int(before["MainPID"])
        # Alive and pinging: no watchdog action while it runs normally.
        time.sleep(8)
        assert node.main_pid(AGENT) == pid
        cursor = machine.journal_cursor()
        stopped_at = time.monotonic()
        machine.run("kill", "-STOP", str(pid))

        def restarted() -> bool:
            now = machine.show(AGENT, "MainPID", "NRestarts", "ActiveState", "StatusText")
            return (
                now["MainPID"] not in ("0", str(pid))
                and now["ActiveState"] == "active"
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1
            )

        # 6 s watchdog + abort/kill (TimeoutAbortSec = TimeoutStopSec = 15 s at
        # most) + RestartSec=10s + start.
        wait_for("systemd to restart the stopped agent", restarted, 60)
        took = time.monotonic() - stopped_at
        print(f"watchdog: SIGSTOP to active again in {took:.1f}s")
        # Pinged every 3 s (half of WatchdogSec): the timeout fires 3 to 6 s
        # after the stop, the restart 10 s later.
        assert took >= 3 + 10 - 1, "restarted before WatchdogSec/2 + RestartSec"
        messages = [r.get("MESSAGE", "") for r in machine.unit_records(AGENT, after=cursor)]
        assert any("Watchdog timeout" in m for m in messages), messages
        assert any("Failed with result 'watchdog'" in m for m in messages), messages
        node.wait_status("kube-apiserver: WARNING")
    finally:
        machine.run("rm", "-f", dropin)
        machine.systemctl("daemon-reload")
        machine.systemctl("restart", AGENT)
        node.wait_status("kube-apiserver: WARNING")
    assert machine.show(AGENT, "WatchdogUSec")["WatchdogUSec"] == "2min"


def test_systemd_analyze_security_exposure(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    out = node.machine.run("systemd-analyze", "security", "--no-pager", AGENT, check=False).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
    assert match, out
    score = float(match.group(1))
    open_items = [line for line in out.splitlines() if line.lstrip().startswith("✗")]
    with capsys.disabled():
        print(f"\nsystemd-analyze security {AGENT}: {score} {match.group(2)}")
        for line in open_items:
            print("  " + " ".join(line.split()))
    assert score <= MAX_EXPOSURE, out


def test_status_verb_reads_what_the_daemon_saved(node: Node) -> None:
    state_dir = node.machine.path("/var/lib/kube-loopback-guard")
    assert state_dir.is_dir()
    assert state_dir.stat().st_mode & 0o777 == 0o755
    out = node.machine.run("kube-loopback-guard", "status", check=False)
    assert "kube-apiserver" in out.stdout and "WARNING" in out.stdout, out
