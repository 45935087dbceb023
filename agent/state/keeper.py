"""The daemon's state in memory, and when it goes to disk.

The daemon holds the state between checks and writes the file only when what
it says changes (a state, a certificate, a process, an error, an alert, the
summary's days), and otherwise once an hour so `status` is never far behind —
not after every check: an fsync per interval is most of a check's cost. It
does not re-read the file per cycle either: a stat tells whether someone else
(the `restart` verb, a restart the daemon ran) wrote it since, and only then
are the restart records read back.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import List, Mapping, Optional, Tuple

from agent.state.records import AgentState, TargetState, settle_future
from agent.state.store import load_state, state_path, update_state

REWRITE_EVERY = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

FileId = Tuple[int, int, int]


def file_id(path: str) -> Optional[FileId]:
    """Given a path, return what changes when the file is replaced or written
    (inode, mtime, size), or None if it is missing or unreadable."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _lasting(target: TargetState) -> TargetState:
    """A target's state without what changes on every check."""
    return replace(target, checked_at=_EPOCH, seconds_left=None)


def write_due(
    written: Optional[Mapping[str, TargetState]],
    written_at: Optional[datetime],
    targets: Mapping[str, TargetState],
    now: datetime,
) -> bool:
    """Given the targets last written (None: not yet) and when, the targets
    now and now, return whether to write the file."""
    if written is None or written_at is None:
        return True
    if now - written_at >= REWRITE_EVERY or now < written_at:
        return True
    if written.keys() != targets.keys():
        return True
    return any(_lasting(written[name]) != _lasting(targets[name]) for name in targets)


class StateKeeper:
    """The state of one state_dir, kept in memory and written when due."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.state = AgentState.empty()
        self._path = state_path(state_dir)
        self._seen: Optional[FileId] = None
        self._written: Optional[Mapping[str, TargetState]] = None
        self._written_at: Optional[datetime] = None

    def load(self, now: datetime) -> Optional[str]:
        """Read the file (at start, or for a new state_dir); return
        load_state's message about a corrupt file, if any."""
        self.state, message = load_state(self.state_dir, now)
        self._seen = file_id(self._path)
        return message

    def refresh(self, now: datetime) -> Optional[str]:
        """If someone else wrote the file since we last saw it, take its
        restart records (ours are the target records); return load_state's
        message, if any."""
        seen = file_id(self._path)
        if seen == self._seen:
            return None
        disk, message = load_state(self.state_dir, now)
        self.state = replace(self.state, restarts=disk.restarts)
        self._seen = file_id(self._path)
        return message

    def save(
        self, targets: Mapping[str, TargetState], now: datetime
    ) -> Tuple[Optional[str], Tuple[str, ...]]:
        """Keep the targets in memory; write them (under the lock, keeping the
        restart records on disk) when due, or when a time dated ahead of the
        clock was settled to now (so that it is said once). Return
        load_state's message, if any, and settle_future's notes. Raise
        OSError if the file cannot be written (the targets stay in memory and
        the write is retried next time)."""
        self.state, notes = settle_future(replace(self.state, targets=dict(targets)), now)
        if not notes and not write_due(self._written, self._written_at, targets, now):
            return None, ()
        moved: List[str] = []

        def change(state: AgentState) -> AgentState:
            settled, said = settle_future(replace(state, targets=dict(self.state.targets)), now)
            moved[:] = said
            return settled

        self.state, message = update_state(self.state_dir, change, now)
        self._seen = file_id(self._path)
        self._written, self._written_at = dict(self.state.targets), now
        return message, tuple(dict.fromkeys([*notes, *moved]))
