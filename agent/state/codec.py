"""The state file's JSON: `encode_state` writes an AgentState, `decode_state`
reads one back, naming the JSON path of whatever is wrong.

The document is `{"version": 1, "targets": {...}, "restarts": [...]}`. Every
time is written as RFC 3339 UTC with the microseconds kept, because a process
is recognised by its exact start time; a naive datetime is refused.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from agent.model import MAX_LIFETIME, State
from agent.state.records import (
    AgentState,
    CertRecord,
    ProcessRecord,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
    plausible_lifetime,
    trim_restarts,
)
from agent.timefmt import format_rfc3339, parse_rfc3339

__all__ = ["STATE_VERSION", "decode_state", "encode_state", "salvage_restarts"]

STATE_VERSION = 1

_STATES = frozenset(s.value for s in State)
E = TypeVar("E", bound=Enum)


# --- encoding ----------------------------------------------------------------


def _time(moment: datetime) -> str:
    return format_rfc3339(moment, fraction="auto")


def _optional_time(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else _time(moment)


def _process_json(process: Optional[ProcessRecord]) -> Optional[Dict[str, Any]]:
    if process is None:
        return None
    return {"pid": process.pid, "started_at": _time(process.started_at)}


def _target_json(target: TargetState) -> Dict[str, Any]:
    cert = target.cert
    return {
        "checked_at": _time(target.checked_at),
        "state": target.state,
        "source": target.source,
        "summary": target.summary,
        "seconds_left": target.seconds_left,
        "not_after": _optional_time(target.not_after),
        "cert": None
        if cert is None
        else {
            "sha256": cert.sha256,
            "subject": cert.subject,
            "not_before": _time(cert.not_before),
            "not_after": _time(cert.not_after),
        },
        "process": _process_json(target.process),
        "probe_error": target.probe_error,
        "learned_lifetime_seconds": None
        if target.learned_lifetime is None
        else target.learned_lifetime.total_seconds(),
        "learned_from": _process_json(target.learned_from),
        "last_alert_state": target.last_alert_state,
        "last_alert_at": _optional_time(target.last_alert_at),
    }


def _restart_json(record: RestartRecord) -> Dict[str, Any]:
    return {
        "target": record.target,
        "at": _time(record.at),
        "phase": record.phase.value,
        "outcome": None if record.outcome is None else record.outcome.value,
        "old_not_after": _optional_time(record.old_not_after),
        "new_not_after": _optional_time(record.new_not_after),
        "detail": record.detail,
    }


def encode_state(state: AgentState) -> bytes:
    """Given the state, return it as JSON bytes, its restarts trimmed by trim_restarts.

    Raise ValueError if a datetime is naive or a number is not finite.
    """
    document = {
        "version": STATE_VERSION,
        "targets": {name: _target_json(t) for name, t in state.targets.items()},
        "restarts": [_restart_json(r) for r in trim_restarts(state.restarts)],
    }
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8")


# --- decoding: each reader names the JSON path of what is wrong ---------------

T = TypeVar("T")


class _Object:
    """A JSON object being decoded, with the path it sits at for error messages."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        self.value: Dict[str, Any] = value
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str) -> Any:
        if key not in self.value:
            raise ValueError(f"{self.at(key)}: missing")
        return self.value[key]

    def optional(self, key: str, read: Callable[[Any, str], T]) -> Optional[T]:
        value = self.raw(key)
        return None if value is None else read(value, self.at(key))

    def required(self, key: str, read: Callable[[Any, str], T]) -> T:
        value = self.raw(key)
        if value is None:
            raise ValueError(f"{self.at(key)}: must not be null")
        return read(value, self.at(key))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _number(value: Any, where: str) -> float:
    # bool is an int in Python, but `true` is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    # Python's json reads NaN and Infinity, which encode_state would refuse.
    if not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _pid(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: expected a positive integer PID, got {value!r}")
    return value


def _choice(kind: Type[E]) -> Callable[[Any, str], E]:
    def read(value: Any, where: str) -> E:
        text = _str(value, where)
        try:
            return kind(text)
        except ValueError:
            known = ", ".join(member.value for member in kind)
            raise ValueError(f"{where}: expected one of {known}, got {text[:40]!r}") from None

    return read


def _state(value: Any, where: str) -> str:
    text = _str(value, where)
    if text not in _STATES:
        raise ValueError(f"{where}: expected one of {', '.join(sorted(_STATES))}, got {text!r}")
    return text


def _datetime(value: Any, where: str) -> datetime:
    return parse_rfc3339(_str(value, where), where=where)


def _lifetime(value: Any, where: str) -> timedelta:
    seconds = _number(value, where)
    try:
        lifetime = timedelta(seconds=seconds)
    except OverflowError:
        lifetime = timedelta.max
    if not plausible_lifetime(lifetime):
        raise ValueError(
            f"{where}: expected a number of seconds in (0, {MAX_LIFETIME.total_seconds():.0f}], "
            f"got {value!r}"
        )
    return lifetime


def _process(value: Any, where: str) -> ProcessRecord:
    obj = _Object(value, where)
    return ProcessRecord(
        pid=obj.required("pid", _pid), started_at=obj.required("started_at", _datetime)
    )


def _cert(value: Any, where: str) -> CertRecord:
    obj = _Object(value, where)
    return CertRecord(
        sha256=obj.required("sha256", _str),
        subject=obj.required("subject", _str),
        not_before=obj.required("not_before", _datetime),
        not_after=obj.required("not_after", _datetime),
    )


def _target(value: Any, where: str) -> TargetState:
    obj = _Object(value, where)
    learned_lifetime = obj.optional("learned_lifetime_seconds", _lifetime)
    learned_from = obj.optional("learned_from", _process)
    return TargetState(
        checked_at=obj.required("checked_at", _datetime),
        state=obj.required("state", _state),
        source=obj.required("source", _str),
        summary=obj.required("summary", _str),
        seconds_left=obj.optional("seconds_left", _number),
        not_after=obj.optional("not_after", _datetime),
        cert=obj.optional("cert", _cert),
        process=obj.optional("process", _process),
        probe_error=obj.optional("probe_error", _str),
        learned_lifetime=learned_lifetime,
        learned_from=learned_from,
        last_alert_state=obj.optional("last_alert_state", _state),
        last_alert_at=obj.optional("last_alert_at", _datetime),
    )


def _restart(value: Any, where: str) -> RestartRecord:
    obj = _Object(value, where)
    return RestartRecord(
        target=obj.required("target", _str),
        at=obj.required("at", _datetime),
        phase=obj.required("phase", _choice(RestartPhase)),
        outcome=obj.optional("outcome", _choice(RestartResult)),
        old_not_after=obj.optional("old_not_after", _datetime),
        new_not_after=obj.optional("new_not_after", _datetime),
        detail=obj.required("detail", _str),
    )


def decode_state(data: bytes) -> AgentState:
    """Given the bytes of a state file, return the state.

    Raise ValueError naming what is wrong if they are not UTF-8 JSON, the
    version is not 1, or a key is missing or of the wrong type.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    top = _Object(document, "")
    version = top.raw("version")
    if type(version) is not int or version != STATE_VERSION:
        raise ValueError(
            f"version: unsupported state version {version!r} (this agent reads {STATE_VERSION})"
        )
    targets_obj = _Object(top.raw("targets"), "targets")
    targets = {
        name: _target(value, targets_obj.at(name)) for name, value in targets_obj.value.items()
    }
    restarts_raw = top.raw("restarts")
    if not isinstance(restarts_raw, list):
        raise ValueError(f"restarts: expected an array, got {_kind(restarts_raw)}")
    restarts: List[RestartRecord] = [
        _restart(value, f"restarts[{i}]") for i, value in enumerate(restarts_raw)
    ]
    return AgentState(targets=targets, restarts=trim_restarts(restarts))


# A restart record is a flat JSON object; in a damaged file each one that is
# still whole can be read on its own.
_FLAT_OBJECT = re.compile(rb"\{[^{}]*\}")


def salvage_restarts(data: bytes) -> Tuple[RestartRecord, ...]:
    """Given the bytes of a state file that decode_state refused, return every
    restart record still readable in it (oldest first, trimmed), so that a
    damaged file never forgets a restart that min_interval must count.

    Never raises.
    """
    found: List[RestartRecord] = []
    for match in _FLAT_OBJECT.finditer(data):
        if b'"target"' not in match.group(0):
            continue  # cheap: a file of a million "{}" stays a quick read
        try:
            value = json.loads(match.group(0).decode("utf-8"))
            record = _restart(value, "restart")
        except (ValueError, RecursionError):
            continue
        if record not in found:
            found.append(record)
    return trim_restarts(found)
