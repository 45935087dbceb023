"""The daemon's state kept in memory and written only when it changed (or
hourly), with other writers' restart records picked up by a stat, against
real files in a temp directory."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent.state.keeper import REWRITE_EVERY, StateKeeper, file_id
from agent.state.records import RestartPhase, RestartRecord, RestartResult, TargetState, add_restart
from agent.state.store import read_state, state_path, update_state

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
NOT_AFTER = datetime(2027, 1, 9, 8, 58, 13, tzinfo=timezone.utc)


def target(checked_at: datetime, state: str = "warning") -> TargetState:
    return TargetState(
        checked_at=checked_at,
        state=state,
        source="probe",
        summary="loopback certificate expires 2027-01-09 08:58 UTC (39.9 days left)",
        seconds_left=(NOT_AFTER - checked_at).total_seconds(),
        not_after=NOT_AFTER,
        cert=None,
        process=None,
        probe_error=None,
        learned_lifetime=None,
        learned_from=None,
        last_alert_state=state,
        last_alert_at=T0,
    )


def test_checks_that_change_nothing_do_not_write(tmp_path: Path) -> None:
    keeper = StateKeeper(str(tmp_path))
    keeper.load(T0)
    keeper.save({"api": target(T0)}, T0)
    written = file_id(state_path(str(tmp_path)))
    assert written is not None
    for minute in range(1, 12):
        now = T0 + timedelta(minutes=minute * 5)
        keeper.save({"api": target(now)}, now)
        assert keeper.state.targets["api"].checked_at == now  # kept in memory
    assert file_id(state_path(str(tmp_path))) == written
    assert read_state(str(tmp_path)).targets["api"].checked_at == T0


def test_a_change_is_written_at_once(tmp_path: Path) -> None:
    keeper = StateKeeper(str(tmp_path))
    keeper.load(T0)
    keeper.save({"api": target(T0)}, T0)
    later = T0 + timedelta(minutes=5)
    keeper.save({"api": target(later, state="critical")}, later)
    on_disk = read_state(str(tmp_path)).targets["api"]
    assert (on_disk.state, on_disk.checked_at) == ("critical", later)
    keeper.save({"api": target(later), "other": target(later)}, later)
    assert set(read_state(str(tmp_path)).targets) == {"api", "other"}


def test_rewritten_hourly_so_status_is_never_far_behind(tmp_path: Path) -> None:
    keeper = StateKeeper(str(tmp_path))
    keeper.load(T0)
    keeper.save({"api": target(T0)}, T0)
    almost = T0 + REWRITE_EVERY - timedelta(seconds=1)
    keeper.save({"api": target(almost)}, almost)
    assert read_state(str(tmp_path)).targets["api"].checked_at == T0
    hour = T0 + REWRITE_EVERY
    keeper.save({"api": target(hour)}, hour)
    assert read_state(str(tmp_path)).targets["api"].checked_at == hour


def test_the_file_is_not_reread_unless_someone_else_wrote_it(tmp_path: Path) -> None:
    keeper = StateKeeper(str(tmp_path))
    keeper.load(T0)
    keeper.save({"api": target(T0)}, T0)
    # Garbage of the same size and mtime in place: a re-read would call the
    # file corrupt and move it aside; unchanged to a stat, it is not read.
    path = state_path(str(tmp_path))
    before = os.stat(path)
    good = Path(path).read_bytes()
    with open(path, "r+b") as handle:
        handle.write(b"\0" * len(good))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert keeper.refresh(T0) is None
    assert os.path.exists(path) and keeper.state.targets["api"] == target(T0)
    Path(path).write_bytes(good)
    record = RestartRecord("api", T0, RestartPhase.INTENT, None, NOT_AFTER, None, "by hand")
    update_state(str(tmp_path), lambda s: add_restart(s, record), T0)  # the `restart` verb
    assert keeper.refresh(T0) is None
    assert keeper.state.restarts == (record,)
    # Our targets in memory win over the (older) ones on disk.
    later = T0 + timedelta(minutes=5)
    keeper.save({"api": target(later)}, later)
    keeper.refresh(later)
    assert keeper.state.targets["api"].checked_at == later


def test_a_failed_write_keeps_the_state_in_memory_and_is_retried(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    keeper = StateKeeper(str(blocker))
    keeper.load(T0)
    try:
        keeper.save({"api": target(T0)}, T0)
    except OSError:
        pass
    else:
        raise AssertionError("expected OSError")
    assert keeper.state.targets["api"] == target(T0)
    blocker.unlink()
    later = T0 + timedelta(minutes=5)
    keeper.save({"api": replace(target(later))}, later)
    assert read_state(str(blocker)).targets["api"].checked_at == later


def test_a_time_ahead_of_the_clock_is_settled_said_once_and_written(tmp_path: Path) -> None:
    keeper = StateKeeper(str(tmp_path))
    keeper.load(T0)
    keeper.save({"api": target(T0)}, T0)
    ahead = RestartRecord(
        "api", T0 + timedelta(days=30), RestartPhase.DONE, RestartResult.SUCCEEDED, None, None, ""
    )
    update_state(str(tmp_path), lambda s: add_restart(s, ahead), T0)  # before a clock step
    later = T0 + timedelta(minutes=5)
    keeper.refresh(later)
    message, notes = keeper.save({"api": target(later)}, later)
    assert message is None and len(notes) == 1 and "ahead of the clock" in notes[0]
    assert read_state(str(tmp_path)).restarts[0].at == later  # saved as now
    keeper.refresh(later)
    assert keeper.save({"api": target(later)}, later + timedelta(minutes=5)) == (None, ())
