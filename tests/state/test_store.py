"""The state file's edges (agent.state.store): a damaged file keeps its restart
records, evidence is bounded, nothing in state_dir is followed through a
symlink, and a state_dir others may write to is refused (issues 9.1, 9.11)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.state.codec import encode_state
from agent.state.records import AgentState, RestartPhase, RestartRecord, RestartResult, last_restart
from agent.state.store import (
    LOCK_FILE,
    MAX_CORRUPT_FILES,
    RESTART_LOCK_FILE,
    STATE_FILE,
    RestartLock,
    UnsafeStateDir,
    load_state,
    read_state,
    save_state,
    update_state,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def restarted(target: str, minutes_ago: int) -> RestartRecord:
    at = NOW - timedelta(minutes=minutes_ago)
    return RestartRecord(
        target, at, RestartPhase.DONE, RestartResult.SUCCEEDED, at, at + timedelta(days=365), "due"
    )


def test_a_truncated_file_keeps_its_restart_records(tmp_path: Path) -> None:
    state = AgentState(targets={}, restarts=(restarted("a", 30), restarted("b", 20)))
    data = encode_state(state)
    (tmp_path / STATE_FILE).write_bytes(data[: data.index(b'"b"') + 2])
    loaded, message = load_state(str(tmp_path), NOW)
    assert message is not None and "starting with the 1 restart record(s)" in message
    # min_interval still knows target a was restarted half an hour ago.
    assert last_restart(loaded, "a") == NOW - timedelta(minutes=30)
    assert loaded.restarts == (restarted("a", 30),)


def test_an_invalid_record_does_not_lose_the_valid_ones(tmp_path: Path) -> None:
    state = AgentState(targets={}, restarts=(restarted("a", 30), restarted("b", 20)))
    data = encode_state(state).replace(b'"phase": "done"', b'"phase": 7', 1)
    (tmp_path / STATE_FILE).write_bytes(data)
    loaded, message = load_state(str(tmp_path), NOW)
    assert message is not None and "corrupt" in message
    assert loaded.restarts == (restarted("b", 20),)


def test_at_most_a_handful_of_corrupt_files_are_kept(tmp_path: Path) -> None:
    for second in range(3 * MAX_CORRUPT_FILES):
        (tmp_path / STATE_FILE).write_bytes(b"{")
        load_state(str(tmp_path), NOW + timedelta(seconds=second))
    kept = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert len(kept) == MAX_CORRUPT_FILES
    # The newest evidence is what stays.
    assert kept[-1] == f"{STATE_FILE}.corrupt-20261129T120014Z"


def test_a_planted_state_symlink_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"version": 1, "targets": {}, "restarts": []}')
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / STATE_FILE).symlink_to(secret)
    with pytest.raises(OSError):
        read_state(str(state_dir))
    loaded, message = load_state(str(state_dir), NOW)
    assert loaded == AgentState.empty() and message is not None and "unreadable" in message
    assert secret.exists()  # the link was moved aside, not its target


@pytest.mark.parametrize("name", [LOCK_FILE, RESTART_LOCK_FILE])
def test_lock_files_are_not_followed(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / name).symlink_to(victim)
    with pytest.raises(OSError):
        if name == LOCK_FILE:
            update_state(str(state_dir), lambda s: s, NOW)
        else:
            RestartLock(str(state_dir)).acquire()
    assert not victim.exists()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_state_dir_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(mode)
    with pytest.raises(UnsafeStateDir, match=f"refusing state_dir {state_dir}: it has mode"):
        update_state(str(state_dir), lambda s: s, NOW)
    with pytest.raises(UnsafeStateDir):
        save_state(str(state_dir), AgentState.empty())
    with pytest.raises(UnsafeStateDir):
        RestartLock(str(state_dir)).acquire()
    loaded, message = load_state(str(state_dir), NOW)
    assert loaded == AgentState.empty() and message is not None and "refusing" in message
    assert os.listdir(state_dir) == []


def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    os.chown(state_dir, 4321, 4321)
    with pytest.raises(UnsafeStateDir, match="is owned by uid 4321"):
        update_state(str(state_dir), lambda s: s, NOW)


def test_a_safe_state_dir_is_used(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    update_state(str(state_dir), lambda s: s, NOW)
    assert (state_dir / STATE_FILE).exists()
    assert RestartLock(str(state_dir)).acquire()


def test_a_state_dir_below_a_file_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    loaded, message = load_state(str(blocker / "state"), NOW)
    assert loaded == AgentState.empty()
    assert message is not None and "cannot stat it (Not a directory)" in message
