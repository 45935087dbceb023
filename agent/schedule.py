"""When the daemon does what: the timetable of `run`, as a pure object.

`Schedule.tick(now)` takes a reading of the monotonic clock and returns a
`Tick`: whether to reload the config, start a check, send READY=1 early, say
that the running check hung, send WATCHDOG=1, and how long to sleep until the
next thing is due. The daemon reports what happened (`check_done`,
`request_reload`, `configure`); it never compares times itself. Nothing here
reads a clock, sleeps or does I/O, so the timetable is tested with plain
numbers.

Times are seconds on the monotonic clock, so a wall-clock jump neither skips
nor doubles a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

# READY=1 goes out with the first check's result, or after this long with
# STATUS "first check running": a hung peer at boot must not exceed the
# unit's TimeoutStartSec, however long the configured timeouts add up to.
READY_GRACE = 2.0
# After a restart, look again this soon to show the new certificate.
RECHECK_AFTER_RESTART = 5.0


@dataclass(frozen=True)
class Tick:
    """What to do now, in this order, then sleep at most `wait` seconds
    (None: until woken by a signal or the end of the check)."""

    reload: bool = False
    start_check: bool = False
    ready: bool = False
    hung_for: Optional[float] = None
    ping: bool = False
    wait: Optional[float] = None


class Schedule:
    """The daemon's timetable: one check at a time, every `interval` seconds
    from the start of the previous one; WATCHDOG=1 every `watchdog` seconds
    unless the running check has taken longer than `budget`; a reload waits
    for the running check and is followed by a check at once."""

    def __init__(
        self,
        interval: float,
        budget: float,
        watchdog: Optional[float],
        now: float,
        ready_grace: float = READY_GRACE,
    ) -> None:
        self.interval = interval
        self.budget = budget
        self.watchdog = watchdog
        self._ready_at: Optional[float] = now + ready_grace
        self._next_ping = now
        self._last_start: Optional[float] = None
        self._running_since: Optional[float] = None
        self._soon: Optional[float] = None
        self._reload_pending = False
        self._check_now = True
        self._hung_reported = False

    @property
    def running(self) -> bool:
        return self._running_since is not None

    def configure(self, interval: float, budget: float) -> None:
        """A new config: the next check is due `interval` after the last start."""
        self.interval = interval
        self.budget = budget

    def request_reload(self) -> None:
        self._reload_pending = True

    def ready_sent(self) -> None:
        """READY=1 went out (with the first check's result): no early READY."""
        self._ready_at = None

    def check_done(self, now: float, recheck_soon: bool = False) -> None:
        """The running check finished; `recheck_soon` after a restart."""
        self._running_since = None
        self._hung_reported = False
        if recheck_soon:
            self._soon = now + RECHECK_AFTER_RESTART

    def next_check(self) -> Optional[float]:
        """When the next check is due (None: as soon as possible)."""
        if self._check_now or self._last_start is None:
            return None
        due = self._last_start + self.interval
        return due if self._soon is None else min(due, self._soon)

    def tick(self, now: float) -> Tick:
        """Given a reading of the monotonic clock, return what to do now; the
        schedule assumes it is done."""
        reload = start = ready = ping = False
        hung_for: Optional[float] = None
        if not self.running:
            if self._reload_pending:
                self._reload_pending = False
                reload = True
                self._check_now = True
            due = self.next_check()
            if due is None or now >= due:
                start = True
                self._running_since = self._last_start = now
                self._check_now = False
                self._soon = None
        if self._ready_at is not None and now >= self._ready_at:
            ready = True
            self._ready_at = None
        hung = self._running_since is not None and now - self._running_since > self.budget
        if hung and not self._hung_reported:
            self._hung_reported = True
            hung_for = now - self._running_since if self._running_since is not None else None
        if self.watchdog is not None and not hung and now >= self._next_ping:
            ping = True
            self._next_ping = now + self.watchdog
        waits: List[float] = []
        due = self.next_check()
        if not self.running and due is not None:
            waits.append(due - now)
        if self.watchdog is not None and not hung:
            waits.append(self._next_ping - now)
        if self._ready_at is not None:
            waits.append(self._ready_at - now)
        if self._running_since is not None and not hung:
            # Wake when the check would count as hung, to say so.
            waits.append(self._running_since + self.budget - now + 0.001)
        wait = max(0.0, min(waits)) if waits else None
        return Tick(reload, start, ready, hung_for, ping, wait)
