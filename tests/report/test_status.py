"""`status` text (agent.report.status): what a state file holds is shown one
line per fact, even a file written before text from peers was escaped."""

from __future__ import annotations

from datetime import datetime, timezone

from agent.report.status import render_status
from agent.state.records import (
    AgentState,
    CertRecord,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def test_text_from_an_old_state_file_stays_on_its_line() -> None:
    target = TargetState(
        checked_at=NOW,
        state="unknown",
        source="none",
        summary="probe failed: not the loopback certificate (got CN=x\nWATCHDOG=1)",
        seconds_left=None,
        not_after=None,
        cert=CertRecord("ab", "CN=x\nforged line", NOW, NOW),
        process=None,
        probe_error="got CN=x\r\nforged",
        learned_lifetime=None,
        learned_from=None,
        last_alert_state=None,
        last_alert_at=None,
    )
    restart = RestartRecord(
        "api", NOW, RestartPhase.DONE, RestartResult.FAILED, None, None, "hook said\nok"
    )
    text = render_status(AgentState({"api": target}, (restart,)), "/var/lib/x/state.json", NOW)
    lines = text.splitlines()
    assert len(lines) == 6, lines
    assert lines[2] == "  probe failed: not the loopback certificate (got CN=x\\nWATCHDOG=1)"
    assert lines[3] == "  certificate CN=x\\nforged line, sha256 ab"
    assert lines[4] == "  probe error: got CN=x\\r\\nforged"
    assert lines[5].endswith("failed hook said\\nok")
