"""sd_notify: tell systemd we are ready, what we see, and that we are alive.

A thin edge over the sdnotify package; outside systemd (no NOTIFY_SOCKET)
every call is a no-op.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from agent.text import one_line


class Notifier:
    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self._notifier: Optional[Any] = None
        if env.get("NOTIFY_SOCKET"):
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()
        self.watchdog_interval = watchdog_interval(env, os.getpid())

    def send(self, *assignments: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes Latin-1; keep STATUS= text in it.
            text = "\n".join(assignments).encode("latin-1", "replace").decode("latin-1")
            self._notifier.notify(text)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={one_line(status, limit=None)}")

    def status(self, status: str) -> None:
        # A newline in STATUS= would start another assignment (WATCHDOG=…).
        self.send(f"STATUS={one_line(status, limit=None)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> Optional[float]:
    """Given the environment and our PID, return how often to send WATCHDOG=1
    (half of WATCHDOG_USEC, in seconds), or None when no watchdog is set."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
