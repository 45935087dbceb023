"""Recurring problems of the agent itself (cannot save state, cannot write
metrics, a check or a restart that raised), logged like target states: once
when they appear or change kind, then at most once a day while they last, and
once when they are gone.

A problem is recognised by its kind (what failed: "metrics", "state",
"check", "restart api") and its signature (the exception's type and errno),
never by its text: a metrics write error names a random temp file, and a
check failure can carry a peer's words, so the text differs every interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Dict, Optional

from agent.report.events import PRIORITY_ERR, PRIORITY_INFO, REMINDER_EVERY
from agent.report.journal import Journal
from agent.text import one_line


@dataclass(frozen=True)
class Seen:
    signature: str
    logged_at: datetime


def signature(error: BaseException) -> str:
    """Given an exception, return what identifies its kind of failure: the
    type, and the errno for OS errors (ENOSPC and EACCES are different
    problems; two temp file names are the same one)."""
    number = getattr(error, "errno", None)
    name = type(error).__name__
    return f"{name}:{number}" if isinstance(number, int) else name


def describe(error: BaseException) -> str:
    """Given an exception, return it as one bounded line: type and words (its
    words may be a peer's: `agent.text.one_line` escapes them)."""
    text = str(error)
    return one_line(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def should_log(seen: Optional[Seen], sig: str, now: datetime) -> bool:
    """Given what was last logged for a kind (if anything), the signature of
    the problem now and now, return whether to log it: new, changed, or the
    daily reminder."""
    if seen is None or seen.signature != sig:
        return True
    return now - seen.logged_at >= REMINDER_EVERY or now < seen.logged_at


class Problems:
    """Logs problems by kind through the journal, on change plus a daily reminder."""

    def __init__(self, journal: Journal, clock: Callable[[], datetime]) -> None:
        self.journal = journal
        self.clock = clock
        self._seen: Dict[str, Seen] = {}

    def report(
        self, kind: str, error: BaseException, message: str, priority: int = PRIORITY_ERR
    ) -> None:
        """Given what failed, the exception and the text to log, log it if it
        is new, changed, or due for its daily reminder."""
        sig, now = signature(error), self.clock()
        if should_log(self._seen.get(kind), sig, now):
            self._seen[kind] = Seen(sig, now)
            self.journal.send(message, priority, {"PROBLEM": kind})

    def solved(self, kind: str, message: Optional[str] = None) -> None:
        """What failed works again: say so once, if the failure was logged."""
        if self._seen.pop(kind, None) is not None and message:
            self.journal.send(message, PRIORITY_INFO, {"PROBLEM": kind})

    def active(self, kind: str) -> bool:
        return kind in self._seen
