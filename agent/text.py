"""Text that came from outside, made safe to show: one line, bounded.

A certificate's subject, an HTTP body, a Lease's holderIdentity or a process's
argv is chosen by whoever runs the peer. Put raw into `STATUS=` a newline
starts a new sd_notify assignment (`WATCHDOG=trigger`); in the plugin output
it forges a line a monitoring system reads as a result; in a journal MESSAGE
or on stderr it forges a record. Every such text passes through `one_line`
before it reaches one of those, and the sinks apply it once more.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["MAX_OUTSIDE_TEXT", "one_line"]

# Enough for any real subject or error; a peer's megabyte stops here.
MAX_OUTSIDE_TEXT = 300

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    known = _NAMED.get(char)
    if known is not None:
        return known
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: object, limit: Optional[int] = MAX_OUTSIDE_TEXT) -> str:
    """Given any text (or object, shown with str()), return it as one printable
    line: control, format, separator and surrogate characters escaped
    (`\\n`, `\\x1b`, `\\u2028`), cut to `limit` characters with "…" when
    longer (no cut when `limit` is None). Never raises.
    """
    value = text if isinstance(text, str) else str(text)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "…"
    if value.isprintable():
        return value
    # isprintable() is False for every Unicode "Other" and separator except the
    # ASCII space: exactly what may break a line or hide text.
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in value)
