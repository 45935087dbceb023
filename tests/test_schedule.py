"""The daemon's timetable with a fake monotonic clock: cadence, one check at a
time, reloads, READY at boot, watchdog pings and hung checks, in plain numbers.

These replace the daemon tests that slept to count checks; tests/test_daemon.py
keeps one real-process test per behaviour."""

from __future__ import annotations

from typing import List, Optional, Tuple

from agent.schedule import READY_GRACE, RECHECK_AFTER_RESTART, Schedule, Tick


class Clock:
    """Drives a Schedule the way the daemon does: tick, then sleep `wait`
    (or until an event), with checks that take `check_takes` seconds."""

    def __init__(self, schedule: Schedule, start: float, check_takes: float = 0.01) -> None:
        self.schedule = schedule
        self.now = start
        self.check_takes = check_takes
        self.checks: List[float] = []
        self.pings: List[float] = []
        self.ticks: List[Tuple[float, Tick]] = []
        self._check_ends: Optional[float] = None

    def run_until(self, end: float) -> None:
        while self.now < end:
            tick = self.schedule.tick(self.now)
            self.ticks.append((self.now, tick))
            if tick.start_check:
                self.checks.append(self.now)
                self._check_ends = self.now + self.check_takes
            if tick.ping:
                self.pings.append(self.now)
            wake = self.now + tick.wait if tick.wait is not None else float("inf")
            if self._check_ends is not None and self._check_ends <= wake:
                self.now = self._check_ends
                self._check_ends = None
                self.schedule.check_done(self.now)
            else:
                assert wake != float("inf"), "asleep with nothing to wake it"
                self.now = wake


def test_first_check_at_once_then_every_interval_from_the_start() -> None:
    clock = Clock(Schedule(interval=60, budget=120, watchdog=None, now=1000), 1000)
    clock.run_until(1000 + 3600)
    assert clock.checks[:3] == [1000, 1060, 1120]
    assert len(clock.checks) == 60  # an hour at 60 s: neither skipped nor doubled


def test_the_interval_counts_from_the_start_of_a_slow_check() -> None:
    clock = Clock(Schedule(interval=10, budget=120, watchdog=None, now=0), 0, check_takes=3)
    clock.run_until(35)
    assert clock.checks == [0, 10, 20, 30]


def test_a_check_longer_than_the_interval_is_never_doubled() -> None:
    clock = Clock(Schedule(interval=10, budget=120, watchdog=None, now=0), 0, check_takes=25)
    clock.run_until(80)
    # Each next check starts when the previous one ends (late, but one at a time).
    assert clock.checks == [0, 25, 50, 75]


def test_no_check_starts_while_one_runs() -> None:
    schedule = Schedule(interval=1, budget=100, watchdog=None, now=0)
    assert schedule.tick(0).start_check
    assert not any(schedule.tick(t).start_check for t in (1, 2, 5, 50))
    schedule.check_done(50.5)
    assert schedule.tick(50.5).start_check


def test_watchdog_pings_every_half_interval_while_checks_run_and_wait() -> None:
    clock = Clock(Schedule(interval=3600, budget=30, watchdog=0.3, now=0), 0, check_takes=2)
    clock.run_until(10)
    gaps = [b - a for a, b in zip(clock.pings, clock.pings[1:])]
    assert len(clock.pings) >= 33
    assert max(gaps) <= 0.3 + 1e-9


def test_no_pings_without_a_watchdog() -> None:
    clock = Clock(Schedule(interval=5, budget=30, watchdog=None, now=0), 0)
    clock.run_until(60)
    assert clock.pings == []


def test_a_hung_check_is_reported_once_and_stops_the_pings() -> None:
    schedule = Schedule(interval=60, budget=10, watchdog=1.0, now=0)
    assert schedule.tick(0).start_check
    now, hung = 0.0, []
    pings_after_budget = 0
    while now < 40:
        tick = schedule.tick(now)
        if tick.hung_for is not None:
            hung.append((now, tick.hung_for))
        if tick.ping and now > 10:
            pings_after_budget += 1
        assert tick.wait is not None or now > 10  # asleep only once hung
        now += tick.wait if tick.wait is not None else 5
    assert len(hung) == 1
    assert 10 < hung[0][0] < 10.1
    assert pings_after_budget == 0
    # The check ends after all: pings resume, a later hang is reported again.
    schedule.check_done(40)
    assert schedule.tick(40).ping


def test_reload_waits_for_the_running_check_then_checks_at_once() -> None:
    schedule = Schedule(interval=3600, budget=100, watchdog=None, now=0)
    assert schedule.tick(0).start_check
    schedule.request_reload()
    tick = schedule.tick(1)
    assert not tick.reload and not tick.start_check  # the check is still running
    schedule.check_done(2)
    tick = schedule.tick(2)
    assert tick.reload and tick.start_check
    schedule.check_done(3)
    assert not schedule.tick(4).reload  # once


def test_a_reloaded_interval_counts_from_the_last_start() -> None:
    schedule = Schedule(interval=3600, budget=100, watchdog=None, now=0)
    schedule.tick(0)
    schedule.check_done(1)
    schedule.configure(interval=30, budget=100)
    assert schedule.next_check() == 30
    assert schedule.tick(29.9).wait == 30 - 29.9
    assert schedule.tick(30).start_check


def test_recheck_soon_after_a_restart() -> None:
    schedule = Schedule(interval=3600, budget=600, watchdog=None, now=0)
    schedule.tick(0)
    schedule.check_done(200, recheck_soon=True)
    assert schedule.next_check() == 200 + RECHECK_AFTER_RESTART
    assert schedule.tick(200 + RECHECK_AFTER_RESTART).start_check
    schedule.check_done(206)
    # And then back on the interval, from the recheck's start.
    assert schedule.next_check() == 200 + RECHECK_AFTER_RESTART + 3600


def test_ready_goes_out_early_when_the_first_check_takes_long() -> None:
    schedule = Schedule(interval=60, budget=600, watchdog=None, now=0)
    first = schedule.tick(0)
    assert first.start_check and not first.ready
    assert first.wait == READY_GRACE  # wake to send READY
    assert schedule.tick(READY_GRACE).ready
    assert not schedule.tick(READY_GRACE + 1).ready  # once


def test_no_early_ready_once_the_first_check_announced_it() -> None:
    schedule = Schedule(interval=60, budget=600, watchdog=None, now=0)
    schedule.tick(0)
    schedule.check_done(0.05)
    schedule.ready_sent()
    assert not any(schedule.tick(t).ready for t in (0.1, READY_GRACE, 30))


def test_monotonic_time_is_all_it_reads() -> None:
    """A wall-clock jump cannot reach the schedule: it only sees the numbers
    it is given; the same readings always give the same checks."""
    runs = []
    for _ in range(2):
        clock = Clock(Schedule(interval=1, budget=10, watchdog=0.5, now=0), 0)
        clock.run_until(3.5)
        runs.append((clock.checks, clock.pings))
    assert runs[0] == runs[1]
    assert runs[0][0] == [0, 1, 2, 3]
