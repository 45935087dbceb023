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
import select
import signal
import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Callable, Dict, List, Optional

from agent import __version__
from agent.check import ProbeFunction, run_check
from agent.config.loader import DEFAULT_CONFIG_PATH, ConfigError, load_config
from agent.config.types import Config
from agent.judge.decide import Reason, RestartDecision, decide
from agent.model import ApiserverProcess, CheckReport, TargetReport
from agent.observe.discover import ProcessFinder
from agent.report.events import (
    PRIORITY_CRIT,
    PRIORITY_ERR,
    PRIORITY_INFO,
    PRIORITY_NOTICE,
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
from agent.restart.edges import RestartEdges
from agent.restart.restarter import Restarter
from agent.state.records import (
    AgentState,
    TargetState,
    last_restart,
    learned_lifetime,
    process_record,
    settle_future,
    target_state_from,
)
from agent.state.store import load_state, update_state
from agent.timefmt import format_rfc3339

_CHECK_DONE = 0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
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
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.journal = journal
        self.notifier = notifier
        self.probe = probe
        self.clock = clock
        self.monotonic = monotonic
        self.hung_margin = hung_margin
        self.finder = ProcessFinder()
        self.node = socket.gethostname()
        # The last restart plan logged per target, so it is logged on change only.
        self.planned: Dict[str, str] = {}
        self.recheck_soon = False
        self.ready = False
        self.state = AgentState.empty()
        self._wake_w = -1
        self._status = "starting"
        self._last_problem: Dict[str, str] = {}
        self._restarter: Optional[Restarter] = None
        self.restarter()

    # --- journal -------------------------------------------------------------

    def log_plain(self, kind: EventKind, priority: int, message: str, **fields: object) -> None:
        send_event(self.journal, kind, priority, message, **fields)

    def problem(self, key: str, message: str, priority: int = PRIORITY_ERR) -> None:
        """Log a recurring I/O problem once, not once per interval."""
        if self._last_problem.get(key) != message:
            self._last_problem[key] = message
            self.journal.send(message, priority, {})

    def solved(self, key: str) -> None:
        self._last_problem.pop(key, None)

    # --- one check -----------------------------------------------------------

    def learned(self, target: str, process: Optional[ApiserverProcess]) -> Optional[timedelta]:
        return learned_lifetime(self.state.targets.get(target), process_record(process))

    def check_cycle(self) -> str:
        """Check every target, tell the journal what changed, save the state,
        write the metrics; return the STATUS= text."""
        config = self.config
        report = run_check(
            config.targets, config.thresholds, self.finder, self.probe, self.clock, self.learned
        )
        targets: Dict[str, TargetState] = {}
        for item in report.targets:
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
                report.checked_at,
            )
            for event in events:
                event.send(self.journal)
            targets[item.target.name] = replace(
                target_state_from(item, previous, checked_at=report.checked_at),
                last_alert_state=alerted.state,
                last_alert_at=alerted.at,
            )
        self.state = replace(self.state, targets=targets)
        try:
            # Read-modify-write under a lock: the restart history on disk may
            # have grown (the `restart` verb), and is kept as it is there.
            moved: List[str] = []

            def change(state: AgentState) -> AgentState:
                settled, notes = settle_future(replace(state, targets=targets), report.checked_at)
                moved[:] = notes
                return settled

            self.state, message = update_state(config.state_dir, change, report.checked_at)
            if message:
                self.journal.send(message, PRIORITY_ERR, {})
            for note in moved:
                self.journal.send(note, PRIORITY_WARNING, {})
            self.solved("state")
        except OSError as error:
            self.problem("state", f"cannot save state in {config.state_dir}: {error}")
        if config.metrics.textfile:
            try:
                write_metrics(config.metrics.textfile, report)
                self.solved("metrics")
            except OSError as error:
                self.problem(
                    "metrics",
                    f"cannot write metrics to {config.metrics.textfile}: {error}",
                    PRIORITY_WARNING,
                )
        return systemd_status(report, self.restarts(report))

    def announce(self, status: str) -> None:
        """READY=1 with the first status (once the first check is done, even if
        a restart follows and takes minutes), STATUS= after that."""
        if self.ready:
            self.notifier.status(status)
        else:
            self.notifier.ready(status)
            self.ready = True

    def restarts(self, report: CheckReport) -> Dict[str, str]:
        """Decide for every target, restart at most one; return the restart
        part of STATUS= per target."""
        policy = self.config.restart
        texts: Dict[str, str] = {}
        acted = False
        restarter = self.restarter()
        holding = restarter.keep_lease(report.targets, self.state)
        now = self.clock()
        decisions = [
            decide(
                item.assessment,
                policy,
                last_restart(self.state, item.target.name, now),
                self.node,
                now,
            )
            for item in report.targets
        ]
        # Say what we saw before acting: a restart can take ready_timeout.
        self.announce(systemd_status(report, {d.target: d.status for d in decisions if d.status}))
        for item, decision in zip(report.targets, decisions):
            name = item.target.name
            if decision.restart and not acted:
                acted = True
                outcome = restarter.run(item, decision)
                texts[name] = outcome.status
                self.planned.pop(name, None)
                if outcome.acted:
                    self.recheck_soon = True
                continue
            if decision.restart:
                decision = replace(
                    decision, restart=False, message="restart waits: one restart at a time"
                )
            texts[name] = decision.status
            self.note_plan(item, decision)
        if holding is not None:
            for name in (t.target.name for t in report.targets if policy.applies_to(t.target.name)):
                texts[name] = f"{texts[name]}; {holding}" if texts.get(name) else holding
        return texts

    def restarter(self) -> Restarter:
        """The restarter, kept while the config stays (made anew on reload,
        when no check runs): it holds the lease after a failed restart and
        watches other holders' leases."""
        if self._restarter is None:
            edges = RestartEdges(self.probe)
            self._restarter = Restarter(self.config, self.journal, self.node, self.clock, edges)
        return self._restarter

    def note_plan(self, item: TargetReport, decision: RestartDecision) -> None:
        """Log the restart plan when it changes, never once per interval."""
        name = item.target.name
        if self.planned.get(name) == decision.message:
            return
        self.planned[name] = decision.message
        if not decision.status:  # disabled, not due: nothing to say
            return
        waiting = decision.reason in (Reason.UNKNOWN_EXPIRY, Reason.TOO_SOON)
        opening = decision.next_opening
        self.log_plain(
            EventKind.RESTART_BLOCKED if waiting else EventKind.RESTART_PLANNED,
            PRIORITY_WARNING if waiting else PRIORITY_NOTICE,
            f"{name}: {decision.message}",
            TARGET=name,
            RESTART_REASON=decision.reason.value,
            RESTART_AT=format_rfc3339(opening.start) if opening else None,
        )

    def _worker(self, result: List[str]) -> None:
        try:
            result.append(self.check_cycle())
        except Exception as error:  # the check's state turns unknown, the daemon lives
            message = f"check failed: {type(error).__name__}: {error}"
            self.journal.send(message, PRIORITY_ERR, {})
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
        self._restarter = None
        self.restarter()
        self.log_plain(
            EventKind.CONFIG_RELOADED,
            PRIORITY_INFO,
            f"configuration reloaded from {config.path or 'built-in defaults'}: "
            f"{len(config.targets)} target(s), interval {config.interval}",
            CONFIG_FILE=config_source(config),
        )

    def load_state(self, state_dir: str) -> None:
        self.state, message = load_state(state_dir, self.clock())
        if message:
            self.journal.send(message, PRIORITY_ERR, {})

    # --- the loop --------------------------------------------------------------

    def _check_budget(self) -> float:
        """Seconds a check (and the one restart it may carry out) may take."""
        checks = sum(t.timeout.total_seconds() for t in self.config.targets)
        return checks + self.hung_margin + self.restarter().budget()

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
            f"{', '.join(t.name for t in self.config.targets)} every {self.config.interval}",
            CONFIG_FILE=config_source(self.config),
        )
        watchdog = self.notifier.watchdog_interval
        now = self.monotonic()
        next_check = now
        next_ping = now
        worker: Optional[threading.Thread] = None
        result: List[str] = []
        started = 0.0
        reload_pending = False
        hung_reported = False
        while True:
            now = self.monotonic()
            if worker is None:
                if reload_pending:
                    reload_pending = False
                    self.reload()
                    self.notifier.ready(self._status)
                    next_check = now
                if now >= next_check:
                    result = []
                    worker = threading.Thread(
                        target=self._worker, args=(result,), name="check", daemon=True
                    )
                    started = now
                    worker.start()
                    next_check = now + self.config.interval.total_seconds()
            hung = worker is not None and now - started > self._check_budget()
            if hung and not hung_reported:
                hung_reported = True
                message = f"check hung for {now - started:.0f}s; watchdog pings stopped"
                self.journal.send(message, PRIORITY_CRIT, {})
                self.notifier.status(message)
            if watchdog is not None and not hung and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + watchdog
            waits = []
            if worker is None:
                waits.append(next_check - now)
            if watchdog is not None and not hung:
                waits.append(next_ping - now)
            timeout = max(0.0, min(waits)) if waits else None
            readable, _, _ = select.select([wake_r], [], [], timeout)
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
                reload_pending = True
            if _CHECK_DONE in wakes and worker is not None:
                # The byte is the worker's last act; it may not have exited
                # yet, so wait for it rather than ask is_alive() (a race).
                worker.join()
                worker = None
                hung_reported = False
                self._status = result[0] if result else "check failed"
                if self.recheck_soon:  # show the restarted apiserver's new certificate
                    self.recheck_soon = False
                    next_check = min(next_check, now + 5.0)
                self.announce(self._status)
