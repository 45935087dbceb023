"""The controlled restart of kube-apiserver.service, on a real systemd.

Skipped, saying why, while the installed package has no `restart` verb (the
feature is newer than the monitoring). Leaves BASE_CONFIG in force.
"""

from __future__ import annotations

import json
import time
from typing import Dict, List, Tuple

import pytest

from agent.report.events import MESSAGE_IDS, EventKind

from .conftest import AGENT, APISERVER, BASE_CONFIG, Node
from .machine import wait_for

STARTED = MESSAGE_IDS[EventKind.RESTART_STARTED]
SUCCEEDED = MESSAGE_IDS[EventKind.RESTART_SUCCEEDED]
FAILED = MESSAGE_IDS[EventKind.RESTART_FAILED]
BLOCKED = MESSAGE_IDS[EventKind.RESTART_BLOCKED]

# Due (20-day certificate, before_expiry 30d), inside a window covering the
# whole day, every day; at most one restart per hour.
RESTART_CONFIG = (
    BASE_CONFIG
    + """
[restart]
enabled = true
method = "systemd"
unit = "kube-apiserver.service"
before_expiry = "30d"
min_interval = "1h"
ready_timeout = "1m"

[[restart.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
timezone = "UTC"
"""
)


@pytest.fixture
def restart_feature(node: Node) -> Node:
    help_ = node.machine.run("kube-loopback-guard", "restart", "--help", check=False)
    if help_.returncode != 0:
        pytest.skip(
            f"the installed package ({node.version}) has no `kube-loopback-guard restart` "
            "verb: the restart feature is not in it yet"
        )
    return node


def _apiserver_invocation(node: Node) -> Tuple[str, int]:
    shown = node.machine.show(APISERVER, "InvocationID", "MainPID")
    return shown["InvocationID"], int(shown["MainPID"])


def test_one_verified_restart_in_the_window_then_none_within_min_interval(
    restart_feature: Node,
) -> None:
    node = restart_feature
    machine = node.machine
    old_cert = node.cert()
    old_invocation, old_pid = _apiserver_invocation(node)
    cursor = machine.journal_cursor()
    node.write_config(RESTART_CONFIG)
    try:
        machine.systemctl("reload", AGENT)
        succeeded = wait_for(
            "the restart-succeeded record",
            lambda: _records(node, SUCCEEDED, cursor) or _fail_on(_records(node, FAILED, cursor)),
            120,
        )
        new_cert = node.cert()
        new_invocation, new_pid = _apiserver_invocation(node)
        # A new process with a new, later certificate: what the restart is for.
        assert new_pid != old_pid and new_invocation != old_invocation
        assert new_cert.sha256 != old_cert.sha256
        assert new_cert.not_before > old_cert.not_before
        assert new_cert.not_after > old_cert.not_after
        record = succeeded[0]
        assert record["TARGET"] == "kube-apiserver"
        assert record["RESTART_METHOD"] == "systemd"
        assert record["CERT_NOT_AFTER"] == old_cert.not_after
        assert record["NEW_CERT_NOT_AFTER"] == new_cert.not_after
        started = _records(node, STARTED, cursor)
        assert len(started) == 1 and started[0]["RESTART_REASON"] == "due", started

        # Five more checks (every 3 s) inside min_interval: nothing more is
        # done, and the hold is logged once, not at every check.
        time.sleep(15)
        assert _apiserver_invocation(node) == (new_invocation, new_pid)
        assert len(_records(node, STARTED, cursor)) == 1
        assert len(_records(node, SUCCEEDED, cursor)) == 1
        assert not _records(node, FAILED, cursor)
        held = _records(node, BLOCKED, cursor)
        assert [r.get("RESTART_REASON") for r in held] == ["too-soon"], held
        # systemd saw exactly one stop and one start of the apiserver.
        messages = [r.get("MESSAGE", "") for r in machine.unit_records(APISERVER, after=cursor)]
        assert len([m for m in messages if m.startswith("Stopping ")]) == 1, messages
        assert len([m for m in messages if m.startswith("Started ")]) == 1, messages
        plan = json.loads(machine.run("kube-loopback-guard", "plan", "--json").stdout)
        assert [(p["name"], p["restart"], p["reason"]) for p in plan["targets"]] == [
            ("kube-apiserver", False, "too-soon")
        ], plan
    finally:
        node.restore_base()


def _records(node: Node, message_id: str, cursor: str) -> List[Dict[str, str]]:
    return node.machine.unit_records(AGENT, message_id, after=cursor)


def _fail_on(failed: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """Raise when a restart-failed record is there; else return nothing found."""
    if failed:
        raise AssertionError(f"the restart failed: {failed[0].get('MESSAGE')}")
    return []
