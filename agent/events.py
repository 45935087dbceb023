"""The journal's vocabulary: each kind of event, its fixed MESSAGE_ID and priority.

MESSAGE_IDs never change once released: operators alert on them
(`journalctl MESSAGE_ID=…`) and the catalog in
systemd/kube-loopback-guard.catalog explains each one.
"""

from __future__ import annotations

from enum import Enum


class EventKind(str, Enum):
    STATE_CHANGED = "state-changed"
    REMINDER = "reminder"
    PROBE_FAILED = "probe-failed"
    CONFIG_RELOADED = "config-reloaded"
    CONFIG_REJECTED = "config-rejected"
    AGENT_STARTED = "agent-started"
    AGENT_STOPPING = "agent-stopping"
    # Added by the restart work; IDs reserved here so they stay stable.
    RESTART_PLANNED = "restart-planned"
    RESTART_BLOCKED = "restart-blocked"
    RESTART_STARTED = "restart-started"
    RESTART_SUCCEEDED = "restart-succeeded"
    RESTART_FAILED = "restart-failed"


MESSAGE_IDS = {
    EventKind.STATE_CHANGED: "eb35f3f875174c1898025bddf912aeca",
    EventKind.REMINDER: "a89cc4a54ea8427a8bbe79a37c6cbfa4",
    EventKind.PROBE_FAILED: "14f65431f3624044995fe8cdb3486d6f",
    EventKind.CONFIG_RELOADED: "19101d2c79674599919da358cf7ae4f2",
    EventKind.CONFIG_REJECTED: "f7bb3f444aba4c259876118e4b051ec4",
    EventKind.AGENT_STARTED: "ad42f2b5a5b346c89b30f239477ee01e",
    EventKind.AGENT_STOPPING: "d85511bb93b345349ae3769b5bb39c00",
    EventKind.RESTART_PLANNED: "81a562d7adc1452bbdfc320d908edb08",
    EventKind.RESTART_BLOCKED: "9e88ed220ffc4710b7f4ca6354d8116b",
    EventKind.RESTART_STARTED: "3ba148d153874f11be028da893cf26f2",
    EventKind.RESTART_SUCCEEDED: "7c06fb9d9bce4bfca086d3292f0d0184",
    EventKind.RESTART_FAILED: "88760a11520b4fe48c7710a196a18ab7",
}

# syslog priorities, as journald's PRIORITY= field wants them.
PRIORITY_CRIT = 2
PRIORITY_ERR = 3
PRIORITY_WARNING = 4
PRIORITY_NOTICE = 5
PRIORITY_INFO = 6
