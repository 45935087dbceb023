"""The daemon's restart round against real peers: a plan logged once, not per
check; at most one restart per round, the others wait; a round's targets
judged with the state it is given. Journal lines on a real Journal stream."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from conftest import Spawn, StandinFactory

from agent.check import run_check
from agent.config.loader import parse_config
from agent.config.types import Config
from agent.observe.discover import ProcessFinder
from agent.observe.probe import probe
from agent.report.journal import Journal
from agent.report.problems import Problems
from agent.restart.cycle import RestartRound
from agent.state.records import AgentState

if TYPE_CHECKING:
    from supervisor import Supervisors


def now() -> datetime:
    return datetime.now(timezone.utc)


def config(
    tmp_path: Path, ports: List[int], days: str, hours: str, process_name: str = ""
) -> Config:
    text = f'state_dir = "{tmp_path}/state"\n'
    for index, port in enumerate(ports):
        text += (
            f'[[targets]]\nname = "api{index}"\nprocess_name = "{process_name}"\n'
            f'host = "127.0.0.1"\nport = {port}\ntimeout = "2s"\n'
        )
    text += (
        '[restart]\nenabled = true\nmethod = "static-pod"\nbefore_expiry = "30d"\n'
        'ready_timeout = "30s"\ncommand_timeout = "10s"\n'
        f'[[restart.windows]]\ndays = {days}\n{hours}\ntimezone = "UTC"\n'
    )
    return parse_config(text, str(tmp_path / "config.toml"))


OFF_HOURS = 'start = "01:00"\nend = "02:00"'


def open_for_an_hour() -> str:
    moment = now()
    return f'start = "{moment - timedelta(hours=1):%H:%M}"\nend = "{moment + timedelta(hours=1):%H:%M}"'


def a_day_not_today_nor_yesterday() -> str:
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    today = now().weekday()
    return f'["{names[(today + 3) % 7]}"]'


def test_a_plan_is_logged_once_not_every_round(tmp_path: Path, standin: StandinFactory) -> None:
    api = standin(expires_in=timedelta(days=20))  # due, but outside the window
    cfg = config(tmp_path, [api.port], a_day_not_today_nor_yesterday(), OFF_HOURS)
    stream = io.StringIO()
    journal = Journal(stream)
    round_ = RestartRound(journal, Problems(journal, now), "master-1")
    announced: List[Dict[str, str]] = []
    for _ in range(3):
        report = run_check(cfg.targets, cfg.thresholds, ProcessFinder(), probe, now)
        texts, acted = round_.run(report, cfg, AgentState.empty(), probe, now, announced.append)
        assert not acted
        assert texts["api0"].startswith("restart planned ")
    assert announced[0] == texts  # said before acting, the same words
    planned = [line for line in stream.getvalue().splitlines() if "api0: restart planned" in line]
    assert len(planned) == 1


def test_one_restart_per_round_the_others_wait(
    tmp_path: Path, supervisors: Supervisors, spawn: Spawn
) -> None:
    spawn("kubelet")  # static pods: kubelet starts the new apiserver
    api = supervisors.start()  # 20-day certificate: due
    old = api.wait_for_child()
    every_day = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
    # Two targets, the same apiserver: both due, one restart.
    cfg = config(
        tmp_path, [api.port, api.port], every_day, open_for_an_hour(), process_name="kube-apiserver"
    )
    stream = io.StringIO()
    journal = Journal(stream)
    round_ = RestartRound(journal, Problems(journal, now), "master-1")
    report = run_check(cfg.targets, cfg.thresholds, ProcessFinder(), probe, now)
    texts, acted = round_.run(report, cfg, AgentState.empty(), probe, now, lambda texts: None)
    assert acted
    assert texts["api0"].startswith("restart succeeded"), texts
    assert texts["api1"] == "restart waits: one restart at a time"
    assert api.wait_for_child(other_than=old) != old
    assert len(api.exits()) == 1
