"""A backward clock step, as the real daemon meets it: a restart record and a
journal alert dated a year ahead (written before the clock stepped back) must
not hold restarts or reminders for a year, only min_interval from now; said once in the journal (9.6)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent_run import run_agent
from conftest import StandinFactory

from agent.state.codec import decode_state, encode_state
from agent.state.records import AgentState, RestartPhase, RestartRecord, RestartResult
from agent.timefmt import format_utc_minutes

CONFIG = """
interval = "1s"
state_dir = "{state}"
[[targets]]
name = "api"
process_name = ""
host = "127.0.0.1"
port = {port}
timeout = "2s"
[restart]
enabled = true
dry_run = true  # whatever it decides, never act on this host
when_expired = "immediately"
min_interval = "24h"
[[restart.windows]]  # required when enabled; expired restarts at once anyway
days = ["sun"]
start = "02:00"
end = "04:00"
"""


def test_records_from_before_a_backward_step_count_as_now(
    tmp_path: Path, standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=-2))
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    now = datetime.now(timezone.utc)
    # The last restart happened "next year": the clock has since stepped back
    # a year, and more than min_interval of real time has passed since.
    ahead = now + timedelta(days=365)
    stepped = RestartRecord(
        "api", ahead, RestartPhase.DONE, RestartResult.SUCCEEDED, None, None, "expired"
    )
    (state_dir / "state.json").write_bytes(
        encode_state(AgentState(targets={}, restarts=(stepped,)))
    )
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(state=state_dir, port=api.port))

    run = run_agent(config, tmp_path, lambda s: "restart held" in s)
    assert "Traceback" not in run.stderr, run.stderr
    # Held for min_interval from now, not for the year of the step.
    tomorrow = format_utc_minutes(datetime.now(timezone.utc) + timedelta(days=1))[:10]
    assert any(f"min_interval until {tomorrow}" in s for s in run.statuses), run.statuses
    notes = [r["MESSAGE"] for r in run.records if "ahead of the clock" in r["MESSAGE"]]
    assert len(notes) == 1, notes
    assert notes[0].startswith("api: restart record (done) is dated ")
    saved = decode_state((state_dir / "state.json").read_bytes())
    (record,) = saved.restarts
    assert record.at <= datetime.now(timezone.utc)
    assert json.loads((state_dir / "state.json").read_text())["version"] == 1
