"""`run`: the long-running agent under systemd.

The main thread only keeps time and listens: signals and "check done" arrive
as bytes on one self-pipe (signal.set_wakeup_fd), deadlines come from the
monotonic clock, so a wall-clock jump neither skips nor doubles a check. Each
check runs in a worker thread, so SIGTERM is answered at once even in the
middle of a probe, and a check that hangs stops the watchdog pings, which
lets systemd restart us.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from agent import __version__
from agent.check import ProbeFunction, run_check
from agent.config import DEFAULT_CONFIG_PATH
from agent.config.durations import format_duration
from agent.config.loader import ConfigError, load_config
from agent.config.types import Config
from agent.model import ApiserverProcess, CheckReport, TargetReport
from agent.observe.discover import ProcessFinder
from agent.report.events import (
    PRIORITY_CRIT,
    PRIORITY_ERR,
    PRIORITY_INFO,
    PRIORITY_WARNING,
    Alerted,
    EventKind,
    send_event,
    target_events,
)
from agent.report.journal import Journal
from agent.report.metrics import write_metrics
from agent.report.notify import Notifier
from agent.report.output import systemd_status
from agent.report.problems import Problems
from agent.report.problems import describe as _says
from agent.schedule import READY_GRACE, Schedule
from agent.state.keeper import StateKeeper
from agent.state.records import (
    AgentState,
    TargetState,
    learned_lifetime,
    process_record,
    target_state_from,
)

if TYPE_CHECKING:
    from agent.restart.cycle import RestartRound

_CHECK_DONE = 0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FIRST_CHECK_RUNNING = "first check running"
# A check slower than its probes' deadlines plus this is hung.
_HUNG_MARGIN = 60.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def config_source(config: Config) -> str:
    """Where a config came from, for the journal's CONFIG_FILE= field."""
    return config.path or f"{DEFAULT_CONFIG_PATH} (absent: built-in defaults)"


def _ignore(signum: int, frame: Optional[FrameType]) -> None:
    """The wakeup fd carries the signal; the handler has nothing to do."""


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Optional[str],
        journal: Journal,
        notifier: Notifier,
        probe: ProbeFunction,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        hung_margin: float = _HUNG_MARGIN,
        ready_grace: float = READY_GRACE,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.journal = journal
        self.notifier = notifier
        self.probe = probe
        self.clock = clock
        self.monotonic = monotonic
        self.hung_margin = hung_margin
        self.ready_grace = ready_grace
        self.finder = ProcessFinder()
        self.node = socket.gethostname()
        self.restart_round: Optional[RestartRound] = None
        self.recheck_soon = False
        self.ready = False
        self._announce_lock = threading.Lock()
        self.keeper = StateKeeper(config.state_dir)
        self.problems = Problems(journal, clock)
        self._wake_w = -1
        self._status = "starting"

    # --- journal -------------------------------------------------------------

    def log_plain(self, kind: EventKind, priority: int, message: str, **fields: object) -> None:
        send_event(self.journal, kind, priority, message, **fields)

    @property
    def state(self) -> AgentState:
        return self.keeper.state

    # --- one check -----------------------------------------------------------

    def learned(self, target: str, process: Optional[ApiserverProcess]) -> Optional[timedelta]:
        return learned_lifetime(self.state.targets.get(target), process_record(process))

    def check_cycle(self) -> str:
        """Check every target, tell the journal what changed, keep the state
        (written when it changed), write the metrics; return the STATUS= text.

        A failure while reporting or restarting one target is that target's
        outcome: the others are still reported, restarted and written."""
        config = self.config
        self._state_message(self.keeper.refresh(self.clock()))
        report = run_check(
            config.targets, config.thresholds, self.finder, self.probe, self.clock, self.learned
        )
        targets: Dict[str, TargetState] = {}
        for item in report.targets:
            name = item.target.name
            try:
                targets[name] = self.record(item, report.checked_at)
                self.problems.solved(f"report {name}")
            except Exception as error:
                self.problems.report(
                    f"report {name}", error, f"{name}: cannot report the check: {_says(error)}"
                )
                previous = self.state.targets.get(name)
                if previous is not None:
                    targets[name] = previous
        self.save(targets, report.checked_at)
        self.write_metrics(report)
        return systemd_status(report, self.restarts(report))

    def record(self, item: TargetReport, checked_at: datetime) -> TargetState:
        """Log what changed for one target; return its new state."""
        previous = self.state.targets.get(item.target.name)
        alerted = Alerted(
            previous.last_alert_state if previous else None,
            previous.last_alert_at if previous else None,
        )
        events, alerted = target_events(
            item,
            previous.state if previous else None,
            previous.probe_error if previous else None,
            alerted,
            checked_at,
        )
        for event in events:
            event.send(self.journal)
        return replace(
            target_state_from(item, previous, checked_at=checked_at),
            last_alert_state=alerted.state,
            last_alert_at=alerted.at,
        )

    def save(self, targets: Dict[str, TargetState], now: datetime) -> None:
        state_dir = self.config.state_dir
        try:
            message, notes = self.keeper.save(targets, now)
            self._state_message(message)
            for note in notes:
                self.journal.send(note, PRIORITY_WARNING, {})
            self.problems.solved("state", f"state saved in {state_dir} again")
        except OSError as error:
            self.problems.report(
                "state", error, f"cannot save state in {state_dir}: {_says(error)}"
            )

    def _state_message(self, message: Optional[str]) -> None:
        if message:
            self.journal.send(message, PRIORITY_ERR, {})

    def write_metrics(self, report: CheckReport) -> None:
        textfile = self.config.metrics.textfile
        if not textfile:
            return
        try:
            write_metrics(textfile, report, self.config.interval, self.state.restarts)
            self.problems.solved("metrics", f"metrics written to {textfile} again")
        except OSError as error:
            # The error names a random temp file: the kind is what counts.
            self.problems.report(
                "metrics",
                error,
                f"cannot write metrics to {textfile}: {error.strerror or _says(error)}",
                PRIORITY_WARNING,
            )

    def announce(self, status: str, early: bool = False) -> None:
        """READY=1 with the first status (once the first check is done, even if
        a restart follows and takes minutes), STATUS= after that. `early`:
        the first check is still running after the grace period; READY=1 now,
        so a hung peer cannot exceed TimeoutStartSec."""
        with self._announce_lock:
            if not self.ready:
                self.notifier.ready(status)
                self.ready = True
            elif not early:
                self.notifier.status(status)

    def restarts(self, report: CheckReport) -> Dict[str, str]:
        """Decide for every target, restart at most one; return the restart
        part of STATUS= per target."""
        if not self.config.restart.enabled:  # the default: no restart machinery loaded
            return {}
        from agent.restart.cycle import RestartRound

        if self.restart_round is None:
            self.restart_round = RestartRound(self.journal, self.problems, self.node)
        texts, acted = self.restart_round.run(
            report,
            self.config,
            self.state,
            self.probe,
            self.clock,
            lambda restart: self.announce(systemd_status(report, restart)),
        )
        self.recheck_soon = self.recheck_soon or acted
        return texts

    def _serve(self, requests: queue.SimpleQueue[List[str]]) -> None:
        """The check thread: one for the daemon's life (a thread per check
        costs more CPU than the rest of the daemon's own work)."""
        while True:
            self._worker(requests.get())

    def _worker(self, result: List[str]) -> None:
        try:
            result.append(self.check_cycle())
            self.problems.solved("check", "checks work again")
        except Exception as error:  # the check's state turns unknown, the daemon lives
            message = f"check failed: {_says(error)}"
            self.problems.report("check", error, message)
            result.append(message)
        finally:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, bytes([_CHECK_DONE]))

    # --- configuration -------------------------------------------------------

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config_path)
        except ConfigError as error:
            self.log_plain(
                EventKind.CONFIG_REJECTED,
                PRIORITY_ERR,
                "configuration rejected, the previous one stays in force: "
                + "; ".join(error.problems),
                CONFIG_FILE=self.config_path or DEFAULT_CONFIG_PATH,
            )
            return
        if config.state_dir != self.config.state_dir:
            self.load_state(config.state_dir)
        self.config = config
        self.log_plain(
            EventKind.CONFIG_RELOADED,
            PRIORITY_INFO,
            f"configuration reloaded from {config.path or 'built-in defaults'}: "
            f"{len(config.targets)} target(s), interval {format_duration(config.interval)}",
            CONFIG_FILE=config_source(config),
        )

    def load_state(self, state_dir: str) -> None:
        self.keeper = StateKeeper(state_dir)
        self._state_message(self.keeper.load(self.clock()))

    # --- the loop --------------------------------------------------------------

    def _check_budget(self) -> float:
        """Seconds a check (and the one restart it may carry out) may take."""
        budget = sum(t.timeout.total_seconds() for t in self.config.targets) + self.hung_margin
        if self.config.restart.enabled:  # the default loads no restart machinery
            from agent.restart.restarter import Restarter

            budget += Restarter.budget_for(self.config.restart)
        return budget

    def run(self) -> int:
        wake_r, self._wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous_fd = signal.set_wakeup_fd(self._wake_w)
        previous_handlers = {s: signal.signal(s, _ignore) for s in (*_STOP_SIGNALS, signal.SIGHUP)}
        try:
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(self._wake_w)

    def _loop(self, wake_r: int) -> int:
        self.load_state(self.config.state_dir)
        self.log_plain(
            EventKind.AGENT_STARTED,
            PRIORITY_INFO,
            f"kube-loopback-guard {__version__} started: "
            f"{', '.join(t.name for t in self.config.targets)} "
            f"every {format_duration(self.config.interval)}",
            CONFIG_FILE=config_source(self.config),
        )
        schedule = Schedule(
            self.config.interval.total_seconds(),
            self._check_budget(),
            self.notifier.watchdog_interval,
            self.monotonic(),
            self.ready_grace,
        )
        requests: queue.SimpleQueue[List[str]] = queue.SimpleQueue()
        worker = threading.Thread(target=self._serve, args=(requests,), name="check", daemon=True)
        worker.start()
        result: List[str] = []
        while True:
            tick = schedule.tick(self.monotonic())
            if tick.reload:
                self.reload()
                self.notifier.ready(self._status)
                schedule.configure(self.config.interval.total_seconds(), self._check_budget())
            if tick.start_check:
                result = []
                requests.put(result)
            if tick.ready:
                self.announce(FIRST_CHECK_RUNNING, early=True)
            if tick.hung_for is not None:
                message = f"check hung for {tick.hung_for:.0f}s; watchdog pings stopped"
                self.journal.send(message, PRIORITY_CRIT, {})
                self.notifier.status(message)
            if tick.ping:
                self.notifier.watchdog()
            readable, _, _ = select.select([wake_r], [], [], tick.wait)
            if not readable:
                continue
            try:
                wakes = os.read(wake_r, 512)
            except BlockingIOError:
                continue
            if any(b in _STOP_SIGNALS for b in wakes):
                self.notifier.stopping()
                self.log_plain(EventKind.AGENT_STOPPING, PRIORITY_INFO, "stopping on signal")
                return 0
            if signal.SIGHUP in wakes:
                schedule.request_reload()
            if _CHECK_DONE in wakes:
                # The byte is the worker's last act for this check: `result`
                # is complete, and the next check starts only after this.
                self._status = result[0] if result else "check failed"
                schedule.check_done(self.monotonic(), self.recheck_soon)
                self.recheck_soon = False
                self.announce(self._status)
                schedule.ready_sent()
