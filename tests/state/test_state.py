"""The state file and its codec (agent.state_codec): exact round trips, bad
files moved aside, learned lifetimes per process."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
from builders import apiserver_process, loopback_cert, target_config
from conftest import mode_of

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import (
    ApiserverProcess,
    LoopbackCert,
    ProbeResult,
    State,
    TargetFacts,
    TargetReport,
)
from agent.state.codec import decode_state, encode_state
from agent.state.records import (
    MAX_RESTARTS,
    AgentState,
    CertRecord,
    ProcessRecord,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
    add_restart,
    learned_lifetime,
    target_state_from,
)
from agent.state.store import (
    MAX_STATE_BYTES,
    STATE_FILE,
    load_state,
    read_state,
    save_state,
    state_path,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
CEST = timezone(timedelta(hours=2))
# psutil start times carry microseconds; they must survive the file exactly.
STARTED = datetime(2026, 1, 9, 9, 58, 13, 371554, tzinfo=timezone.utc)
PROC = ProcessRecord(pid=790992, started_at=STARTED)
V133_LIFETIME = timedelta(days=1096)


def cert_record() -> CertRecord:
    return CertRecord(
        sha256="ab" * 32,
        subject="CN=apiserver-loopback-client@1767952693",
        not_before=datetime(2026, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
        not_after=datetime(2029, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
    )


def full_target() -> TargetState:
    return TargetState(
        # Not UTC on purpose: equality is by instant, and the file holds UTC.
        checked_at=datetime(2026, 11, 29, 14, 0, 0, 500, tzinfo=CEST),
        state="ok",
        source="probe",
        summary="loopback certificate expires 2029-01-09 08:58 UTC (771.9 days left) — ✓",
        seconds_left=66689893.25,
        not_after=datetime(2029, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
        cert=cert_record(),
        process=PROC,
        probe_error=None,
        learned_lifetime=V133_LIFETIME,
        learned_from=PROC,
        last_alert_state="warning",
        last_alert_at=datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc),
    )


def sparse_target() -> TargetState:
    return TargetState(
        checked_at=NOW,
        state="unknown",
        source="none",
        summary='no process named "kube-apiserver" found\nsecond line',
        seconds_left=None,
        not_after=None,
        cert=None,
        process=None,
        probe_error="connection refused",
        learned_lifetime=None,
        learned_from=None,
        last_alert_state=None,
        last_alert_at=None,
    )


def restart(i: int) -> RestartRecord:
    return RestartRecord(
        target="kube-apiserver",
        at=NOW + timedelta(minutes=i),
        phase=RestartPhase.INTENT if i % 2 == 0 else RestartPhase.DONE,
        outcome=None if i % 2 == 0 else RestartResult.SUCCEEDED,
        old_not_after=datetime(2027, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
        new_not_after=None if i % 2 == 0 else datetime(2029, 11, 29, tzinfo=timezone.utc),
        detail=f"restart {i}",
    )


def full_state() -> AgentState:
    return AgentState(
        targets={"kube-apiserver": full_target(), "openshift-apiserver": sparse_target()},
        restarts=(restart(0), restart(1)),
    )


# --- encoding -----------------------------------------------------------------


def test_round_trip_is_exact() -> None:
    state = full_state()
    decoded = decode_state(encode_state(state))
    assert decoded == state
    target = decoded.targets["kube-apiserver"]
    assert target.checked_at.tzinfo is timezone.utc
    assert target.learned_from is not None
    assert target.learned_from.started_at == STARTED
    assert target.learned_from.started_at.microsecond == 371554


def test_encoded_document_shape() -> None:
    document = json.loads(encode_state(full_state()))
    assert document["version"] == 1
    target = document["targets"]["kube-apiserver"]
    assert target["checked_at"] == "2026-11-29T12:00:00.000500Z"
    assert target["not_after"] == "2029-01-09T08:58:13Z"
    assert target["learned_lifetime_seconds"] == 1096 * 86400
    assert target["process"] == {"pid": 790992, "started_at": "2026-01-09T09:58:13.371554Z"}
    assert document["restarts"][0]["new_not_after"] is None


def test_empty_round_trip() -> None:
    assert decode_state(encode_state(AgentState.empty())) == AgentState.empty()


def test_naive_datetime_is_refused_on_encode() -> None:
    state = AgentState(
        targets={"x": replace(sparse_target(), checked_at=datetime(2026, 1, 1))}, restarts=()
    )
    with pytest.raises(ValueError, match="naive"):
        encode_state(state)


def test_restart_history_is_bounded() -> None:
    records = tuple(restart(i) for i in range(MAX_RESTARTS + 17))
    state = AgentState(targets={}, restarts=records)
    decoded = decode_state(encode_state(state))
    assert len(decoded.restarts) == MAX_RESTARTS == 50
    assert decoded.restarts == records[-MAX_RESTARTS:]
    grown = AgentState.empty()
    for record in records:
        grown = add_restart(grown, record)
    assert grown.restarts == records[-MAX_RESTARTS:]


def mutate(change: Callable[[Dict[str, Any]], None]) -> bytes:
    document = json.loads(encode_state(full_state()))
    change(document)
    return json.dumps(document).encode()


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def change(document: Dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = document
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[Dict[str, Any]], None]:
    def change(document: Dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = document
        for key in parents:
            node = node[key]
        del node[last]

    return change


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "expected an object, got an array"),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
        (mutate(_set("version", 2)), "unsupported state version 2"),
        (mutate(_set("version", "1")), "unsupported state version '1'"),
        (mutate(_set("version", True)), "unsupported state version True"),
        (mutate(_set("version", 1.0)), "unsupported state version 1.0"),
        (mutate(_delete("version")), "version: missing"),
        (mutate(_delete("restarts")), "restarts: missing"),
        (mutate(_set("restarts", {})), "restarts: expected an array"),
        (mutate(_set("targets", [])), "targets: expected an object"),
        (mutate(_delete("targets/kube-apiserver/state")), "targets.kube-apiserver.state: missing"),
        (mutate(_set("targets/kube-apiserver/state", "fine")), "expected one of"),
        (mutate(_set("targets/kube-apiserver/summary", None)), "summary: must not be null"),
        (mutate(_set("targets/kube-apiserver/seconds_left", "12")), "expected a number"),
        (mutate(_set("targets/kube-apiserver/seconds_left", True)), "got a boolean"),
        (mutate(_set("targets/kube-apiserver/seconds_left", 10**400)), "finite number"),
        (
            mutate(_set("targets/kube-apiserver/checked_at", "2026-11-29 12:00:00")),
            "targets.kube-apiserver.checked_at: .2026-11-29 12:00:00. is not an RFC 3339 time",
        ),
        (
            mutate(_set("targets/kube-apiserver/not_after", "2029-01-09")),
            "not an RFC 3339 time",
        ),
        (
            mutate(_set("targets/kube-apiserver/process/pid", "790992")),
            "targets.kube-apiserver.process.pid: expected a positive integer PID",
        ),
        (mutate(_set("targets/kube-apiserver/learned_from/pid", 0)), "positive integer PID"),
        (mutate(_set("targets/kube-apiserver/learned_lifetime_seconds", -1)), "seconds in"),
        (mutate(_set("targets/kube-apiserver/cert", "ab")), "cert: expected an object"),
        (mutate(_delete("targets/kube-apiserver/cert/sha256")), "cert.sha256: missing"),
        (mutate(_set("restarts/1/at", None)), r"restarts\[1\].at: must not be null"),
        (mutate(_set("restarts/0/detail", 3)), r"restarts\[0\].detail: expected a string"),
    ],
)
def test_decode_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_state(data)


def test_decode_rejects_nan_that_python_json_would_accept() -> None:
    data = encode_state(full_state()).replace(
        b'"seconds_left": 66689893.25', b'"seconds_left": NaN'
    )
    assert b"NaN" in data
    with pytest.raises(ValueError, match="finite number"):
        decode_state(data)


def test_decode_ignores_unknown_keys() -> None:
    # A newer agent of the same version may add a key; it is not corruption.
    data = mutate(_set("targets/kube-apiserver/added_later", {"x": 1}))
    assert decode_state(data) == full_state()


# --- the file -----------------------------------------------------------------

CORRUPT_NAME = "state.json.corrupt-20261129T120000Z"


def test_save_creates_directory_and_loads_back(tmp_path: Path, strict_umask: None) -> None:
    state_dir = tmp_path / "var" / "lib" / "kube-loopback-guard"
    save_state(str(state_dir), full_state())
    assert state_path(str(state_dir)) == str(state_dir / STATE_FILE)
    # Readable by the non-root status verb despite the umask.
    assert mode_of(state_dir / STATE_FILE) == 0o644
    assert mode_of(state_dir) == 0o755
    assert os.listdir(state_dir) == [STATE_FILE]
    assert load_state(str(state_dir), NOW) == (full_state(), None)
    assert read_state(str(state_dir)) == full_state()


def test_save_keeps_the_mode_of_an_existing_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o750)
    state_dir.chmod(0o750)
    save_state(str(state_dir), full_state())
    assert mode_of(state_dir) == 0o750


def test_save_replaces_previous_state(tmp_path: Path) -> None:
    save_state(str(tmp_path), full_state())
    save_state(str(tmp_path), AgentState.empty())
    assert load_state(str(tmp_path), NOW) == (AgentState.empty(), None)
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_save_under_a_file_raises(tmp_path: Path) -> None:
    # A read-only directory cannot be simulated here: the tests run as root,
    # which ignores mode bits. A state_dir whose parent is a regular file is an
    # unwritable directory every user gets, and save_state must raise upward.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError):
        save_state(str(blocker / "state"), full_state())
    assert blocker.read_text() == "x"


def test_load_missing_file_and_missing_directory(tmp_path: Path) -> None:
    assert load_state(str(tmp_path), NOW) == (AgentState.empty(), None)
    assert load_state(str(tmp_path / "never-created"), NOW) == (AgentState.empty(), None)
    with pytest.raises(FileNotFoundError):
        read_state(str(tmp_path))


@pytest.mark.parametrize(
    ("contents", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": 2, "targets": {}, "restarts": []}', "unsupported state version 2"),
        # A write cut short (what atomic replacement prevents, but a disk may still do).
        (encode_state(full_state())[:300], "not valid JSON"),
        (b"\x00" * 4096, "not valid JSON"),
    ],
)
def test_load_corrupt_file_is_moved_aside(tmp_path: Path, contents: bytes, reason: str) -> None:
    (tmp_path / STATE_FILE).write_bytes(contents)
    state, message = load_state(str(tmp_path), NOW)
    assert state == AgentState.empty()
    assert message is not None
    moved = tmp_path / CORRUPT_NAME
    assert f"state file {tmp_path / STATE_FILE} is corrupt" in message
    assert reason in message
    assert f"moved it to {moved}" in message
    assert moved.read_bytes() == contents
    assert not (tmp_path / STATE_FILE).exists()
    # The next start finds no file and starts quietly.
    assert load_state(str(tmp_path), NOW) == (AgentState.empty(), None)


def test_second_bad_file_in_the_same_second_keeps_the_first(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"first")
    load_state(str(tmp_path), NOW)
    (tmp_path / STATE_FILE).write_bytes(b"second")
    _, message = load_state(str(tmp_path), NOW + timedelta(microseconds=900000))
    assert message is not None
    assert f"moved it to {tmp_path / CORRUPT_NAME}.1" in message
    assert (tmp_path / CORRUPT_NAME).read_bytes() == b"first"
    assert (tmp_path / f"{CORRUPT_NAME}.1").read_bytes() == b"second"


def test_corrupt_name_uses_utc(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"x")
    _, message = load_state(str(tmp_path), NOW.astimezone(CEST))
    assert message is not None and CORRUPT_NAME in message


def test_oversized_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b" " * (MAX_STATE_BYTES + 1))
    state, message = load_state(str(tmp_path), NOW)
    assert state == AgentState.empty()
    assert message is not None and f"larger than {MAX_STATE_BYTES} bytes" in message
    assert (tmp_path / CORRUPT_NAME).exists()


def test_unreadable_file_is_moved_aside(tmp_path: Path) -> None:
    # Unreadable for root too: a directory where the file should be (EISDIR).
    # Permission bits would not stop root, so chmod 000 would prove nothing here.
    (tmp_path / STATE_FILE).mkdir()
    (tmp_path / STATE_FILE / "junk").write_text("x")
    state, message = load_state(str(tmp_path), NOW)
    assert state == AgentState.empty()
    assert message is not None
    assert "is unreadable (Is a directory)" in message
    assert f"moved it to {tmp_path / CORRUPT_NAME}" in message
    assert (tmp_path / CORRUPT_NAME / "junk").read_text() == "x"
    # And the daemon can then save where it was.
    save_state(str(tmp_path), full_state())
    assert load_state(str(tmp_path), NOW) == (full_state(), None)


def test_state_dir_that_is_a_file_is_reported_not_raised(tmp_path: Path) -> None:
    # A file where the directory should be: refused, and nothing touched.
    blocker = tmp_path / "state"
    blocker.write_text("x")
    state, message = load_state(str(blocker), NOW)
    assert state == AgentState.empty()
    assert message is not None
    assert f"refusing state_dir {blocker}: it is not a directory" in message
    assert blocker.read_text() == "x"


def test_failing_move_aside_still_starts_empty(tmp_path: Path) -> None:
    # A real failure to move aside: every name it may use is already taken.
    (tmp_path / STATE_FILE).write_bytes(b"bad")
    (tmp_path / CORRUPT_NAME).write_bytes(b"older evidence")
    for i in range(1, 10):
        (tmp_path / f"{CORRUPT_NAME}.{i}").write_bytes(b"older evidence")
    state, message = load_state(str(tmp_path), NOW)
    assert state == AgentState.empty()
    assert message is not None
    assert "is corrupt" in message and "could not move it aside" in message
    assert "left it in place; starting with empty state" in message
    assert (tmp_path / STATE_FILE).read_bytes() == b"bad"
    assert (tmp_path / CORRUPT_NAME).read_bytes() == b"older evidence"


# --- learned lifetimes ----------------------------------------------------------


def test_learned_lifetime_only_for_the_same_process() -> None:
    state = full_state()  # kube-apiserver learned 1096 days from PROC
    same = ProcessRecord(pid=PROC.pid, started_at=STARTED)
    assert learned_lifetime(state.targets.get("kube-apiserver"), same) == V133_LIFETIME
    # Restarted: a new PID.
    assert learned_lifetime(state.targets.get("kube-apiserver"), replace(same, pid=1234)) is None
    # The PID reused by a later process: same PID, another start.
    later = replace(same, started_at=STARTED + timedelta(days=30))
    assert learned_lifetime(state.targets.get("kube-apiserver"), later) is None
    # No process found now, unknown target, target with nothing learned.
    assert learned_lifetime(state.targets.get("kube-apiserver"), None) is None
    assert learned_lifetime(state.targets.get("other"), same) is None
    assert learned_lifetime(state.targets.get("openshift-apiserver"), same) is None
    assert learned_lifetime(AgentState.empty().targets.get("kube-apiserver"), same) is None


def test_learned_lifetime_survives_boot_time_jitter() -> None:
    # psutil's start time moves by whole seconds when the kernel's boot time is
    # recomputed from a corrected wall clock; it is still the same process.
    state = full_state()
    for shift in (timedelta(seconds=1), timedelta(seconds=-1), timedelta(seconds=2)):
        moved = ProcessRecord(pid=PROC.pid, started_at=STARTED + shift)
        assert learned_lifetime(state.targets.get("kube-apiserver"), moved) == V133_LIFETIME
    far = ProcessRecord(pid=PROC.pid, started_at=STARTED + timedelta(seconds=3))
    assert learned_lifetime(state.targets.get("kube-apiserver"), far) is None


def test_learned_lifetime_survives_the_file() -> None:
    decoded = decode_state(encode_state(full_state()))
    assert learned_lifetime(decoded.targets.get("kube-apiserver"), PROC) == V133_LIFETIME


# --- records from a check -------------------------------------------------------


def apiserver(started_at: datetime = STARTED, pid: int = PROC.pid) -> ApiserverProcess:
    return apiserver_process(started_at, pid)


def report(
    cert: Optional[LoopbackCert], process: Optional[ApiserverProcess], name: str = "kube-apiserver"
) -> TargetReport:
    probe = ProbeResult(
        host="127.0.0.1",
        port=6443,
        server_name="apiserver-loopback-client",
        cert=cert,
        livez="absent" if cert else "not-checked",
        error=None if cert else "connection refused",
    )
    facts = TargetFacts(
        target=name,
        process=process,
        discovery_error=None if process else "no process named kube-apiserver found",
        probe=probe,
    )
    return TargetReport(
        target=target_config(name),
        facts=facts,
        assessment=assess(facts, THRESHOLDS, timedelta(days=365), NOW),
    )


def previous_with_alert() -> TargetState:
    return replace(
        full_target(),
        learned_lifetime=timedelta(days=365),
        learned_from=ProcessRecord(pid=11, started_at=datetime(2025, 1, 1, tzinfo=timezone.utc)),
    )


def test_successful_probe_learns_lifetime_from_its_process() -> None:
    item = report(loopback_cert(STARTED, V133_LIFETIME), apiserver())
    new = target_state_from(item, previous_with_alert(), checked_at=NOW)
    assert new.checked_at == NOW
    assert new.state == State.OK.value == item.assessment.state.value
    assert new.source == "probe"
    assert new.summary == item.assessment.summary
    assert new.seconds_left == item.assessment.seconds_left
    assert new.not_after == item.assessment.not_after
    assert new.cert == CertRecord(
        sha256="cd" * 32,
        subject="CN=apiserver-loopback-client@1767952693",
        not_before=datetime(2026, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
        not_after=datetime(2029, 1, 9, 8, 58, 13, tzinfo=timezone.utc),
    )
    assert new.process == PROC
    assert new.probe_error is None
    assert new.learned_lifetime == V133_LIFETIME
    assert new.learned_from == PROC
    # The daemon owns the alert bookkeeping.
    assert new.last_alert_state == "warning"
    assert new.last_alert_at == datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)


def test_failed_probe_carries_learned_lifetime_over() -> None:
    previous = replace(full_target(), last_alert_state="critical")
    item = report(None, apiserver())
    new = target_state_from(item, previous, checked_at=NOW)
    assert new.source == "process-start"
    assert new.cert is None
    assert new.process == PROC
    assert new.probe_error == "connection refused"
    assert new.learned_lifetime == V133_LIFETIME
    assert new.learned_from == PROC
    assert new.last_alert_state == "critical"


def test_certificate_of_another_process_teaches_nothing() -> None:
    # The probe reached an apiserver started a week before the discovered one:
    # its lifetime is not this process's.
    item = report(loopback_cert(STARTED - timedelta(days=7), V133_LIFETIME), apiserver())
    assert any("another apiserver" in note for note in item.assessment.notes)
    previous = previous_with_alert()
    new = target_state_from(item, previous, checked_at=NOW)
    assert new.cert is not None
    assert new.learned_lifetime == previous.learned_lifetime
    assert new.learned_from == previous.learned_from


def test_probe_without_a_process_teaches_nothing() -> None:
    item = report(loopback_cert(STARTED, V133_LIFETIME), None)
    previous = previous_with_alert()
    new = target_state_from(item, previous, checked_at=NOW)
    assert new.process is None
    assert new.source == "probe"
    assert new.learned_lifetime == previous.learned_lifetime
    assert new.learned_from == previous.learned_from


def test_first_check_has_no_alert_history() -> None:
    new = target_state_from(report(None, None), None, checked_at=NOW)
    assert new.state == "unknown"
    assert new.source == "none"
    assert new.learned_lifetime is None and new.learned_from is None
    assert new.last_alert_state is None and new.last_alert_at is None
    assert decode_state(encode_state(AgentState({"x": new}, ()))).targets["x"] == new
