"""The daemon's check cycle in-process against a real stand-in apiserver,
real files and a real Journal writing lines: what reaches the journal, the
state file and the metrics when things go wrong, without waiting for the
loop's timetable (tests/test_schedule.py) or a subprocess (tests/test_daemon.py)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, List

import pytest
from conftest import StandinFactory

from agent.config.loader import load_config
from agent.daemon import Daemon
from agent.model import ProbeResult
from agent.observe.probe import probe
from agent.report.journal import Journal
from agent.report.notify import Notifier
from agent.state.keeper import file_id
from agent.state.store import read_state, state_path


def window_around_now() -> str:
    """A restart policy whose window (every day, UTC) is open for the next hour."""
    now = datetime.now(timezone.utc)
    return f"""
[restart]
enabled = true
method = "static-pod"
before_expiry = "30d"
[[restart.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "{now - timedelta(hours=1):%H:%M}"
end = "{now + timedelta(hours=1):%H:%M}"
timezone = "UTC"
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def make_daemon(
    tmp_path: Path,
    ports: List[int],
    *,
    extra: str = "",
    probe_function: Callable[[str, int, str, float], ProbeResult] = probe,
) -> tuple[Daemon, io.StringIO, Clock]:
    text = f'interval = "1m"\nstate_dir = "{tmp_path}/state"\n{extra}\n'
    for index, port in enumerate(ports):
        text += (
            f'[[targets]]\nname = "api{index}"\nprocess_name = ""\nhost = "127.0.0.1"\n'
            f'port = {port}\ntimeout = "2s"\n'
        )
    path = tmp_path / "config.toml"
    path.write_text(text)
    stream, clock = io.StringIO(), Clock()
    daemon = Daemon(
        load_config(str(path)), str(path), Journal(stream), Notifier({}), probe_function, clock
    )
    daemon.load_state(str(tmp_path / "state"))
    return daemon, stream, clock


def cycles(daemon: Daemon, clock: Clock, count: int) -> List[str]:
    statuses = []
    for _ in range(count):
        result: List[str] = []
        daemon._worker(result)  # what the loop's worker thread runs
        statuses.extend(result)
        clock.now += timedelta(minutes=1)
    return statuses


def matching(stream: io.StringIO, text: str) -> List[str]:
    return [line for line in stream.getvalue().splitlines() if text in line]


def test_a_metrics_write_error_is_logged_once_not_per_interval(
    tmp_path: Path, standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=200))
    textfile = tmp_path / "klg.prom"
    textfile.mkdir()  # the rename onto it fails, naming a new temp file each time
    daemon, stream, clock = make_daemon(
        tmp_path, [api.port], extra=f'[metrics]\ntextfile = "{textfile}"'
    )
    cycles(daemon, clock, 4)
    assert len(matching(stream, "cannot write metrics")) == 1
    textfile.rmdir()
    cycles(daemon, clock, 2)
    assert len(matching(stream, "metrics written to")) == 1
    assert "kube_loopback_guard_state" in textfile.read_text()
    assert len(matching(stream, "cannot write metrics")) == 1


def test_a_failing_check_is_logged_once_with_each_cycle_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: a probe that raises is already that target's UNKNOWN
    (agent.check), so the whole check raising stands for any bug outside one
    target's check; its words differ every time, as a peer's would."""
    import agent.daemon

    calls = [0]

    def exploding(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        raise RuntimeError(f"boom number {calls[0]}\nSTATUS=injected")

    monkeypatch.setattr(agent.daemon, "run_check", exploding)
    daemon, stream, clock = make_daemon(tmp_path, [1])
    statuses = cycles(daemon, clock, 3)
    assert calls[0] == 3
    assert [s.split(" number")[0] for s in statuses] == ["check failed: RuntimeError: boom"] * 3
    assert all("\n" not in s for s in statuses)
    assert len(matching(stream, "check failed")) == 1


def test_the_state_file_is_written_on_change_not_every_check(
    tmp_path: Path, standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=200))
    daemon, _, clock = make_daemon(tmp_path, [api.port])
    cycles(daemon, clock, 1)
    path = state_path(str(tmp_path / "state"))
    written = file_id(path)
    cycles(daemon, clock, 5)
    assert api.loopback_handshakes >= 6
    assert file_id(path) == written
    api.close()  # a change: the probe fails
    cycles(daemon, clock, 1)
    assert read_state(str(tmp_path / "state")).targets["api0"].state == "unknown"


def test_a_restart_that_raises_is_that_targets_outcome(
    tmp_path: Path, standin: StandinFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: any bug in the restart path (a kubeconfig that crashed the
    lease client, 9.8) stands for itself here as Restarter.run raising."""
    from agent.restart.restarter import Restarter

    def broken(self: Restarter, *args: Any) -> Any:
        raise UnicodeEncodeError("idna", "ü", 0, 1, "label empty or too long")

    monkeypatch.setattr(Restarter, "run", broken)
    first = standin(expires_in=timedelta(days=20))  # due: before_expiry 30d
    second = standin(expires_in=timedelta(days=200))
    textfile = tmp_path / "klg.prom"
    daemon, stream, clock = make_daemon(
        tmp_path,
        [first.port, second.port],
        extra=f'[metrics]\ntextfile = "{textfile}"\n{window_around_now()}',
    )
    (status,) = cycles(daemon, clock, 1)
    assert "api0: WARNING" in status and "restart error: UnicodeEncodeError" in status
    assert "api1: OK" in status
    assert len(matching(stream, "api0: restart error")) == 1
    assert set(read_state(str(tmp_path / "state")).targets) == {"api0", "api1"}
    metrics = textfile.read_text()
    assert 'target="api0"' in metrics and 'target="api1"' in metrics
    cycles(daemon, clock, 2)
    assert len(matching(stream, "api0: restart error")) == 1  # by kind, not per interval


def test_a_target_whose_report_raises_does_not_stop_the_others(
    tmp_path: Path, standin: StandinFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: the event builder raising for one target stands for any
    bug in reporting it (an odd certificate field, 9.5)."""
    import agent.daemon

    real = agent.daemon.target_events

    def fragile(item: Any, *args: Any) -> Any:
        if item.target.name == "api0":
            raise ValueError("odd field")
        return real(item, *args)

    monkeypatch.setattr(agent.daemon, "target_events", fragile)
    first, second = standin(), standin(expires_in=timedelta(days=20))
    textfile = tmp_path / "klg.prom"
    daemon, stream, clock = make_daemon(
        tmp_path, [first.port, second.port], extra=f'[metrics]\ntextfile = "{textfile}"'
    )
    (status,) = cycles(daemon, clock, 1)
    assert "api1: WARNING" in status and "api0: OK" in status
    assert len(matching(stream, "api0: cannot report the check: ValueError: odd field")) == 1
    assert len(matching(stream, "api1: NONE -> WARNING")) == 1
    assert set(read_state(str(tmp_path / "state")).targets) == {"api1"}
    assert 'target="api0"' in textfile.read_text()
