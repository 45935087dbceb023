"""The kinds of value a config option can hold, each a checker.

A checker takes the raw TOML value and returns it normalised, or raises
ValueError with a message that completes "<file>: <key>: …".
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, Tuple

from agent.config.durations import parse_duration
from agent.config.types import RestartMethod
from agent.model import MAX_LIFETIME

# Matched with fullmatch: "$" would also match before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def duration(value: Any) -> timedelta:
    try:
        return parse_duration(string(value))
    except ValueError:
        raise ValueError(
            'must be a duration: a whole number and one unit, such as "30s", "5m", "2h", "60d"'
        ) from None


def positive_duration(value: Any) -> timedelta:
    result = duration(value)
    if result <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return result


def _bounded(low: timedelta, high: timedelta) -> Callable[[Any], timedelta]:
    def check(value: Any) -> timedelta:
        result = duration(value)
        if not low <= result <= high:
            raise ValueError(f"must be between {_text(low)} and {_text(high)}")
        return result

    return check


def _text(value: timedelta) -> str:
    from agent.config.durations import format_duration

    return format_duration(value)


def lifetime(value: Any) -> Optional[timedelta]:
    if value == "auto":
        return None
    try:
        result = positive_duration(value)
    except ValueError:
        raise ValueError('must be "auto" or a duration such as "365d"') from None
    if result > MAX_LIFETIME:
        raise ValueError(f'must be "auto" or a duration of at most {_text(MAX_LIFETIME)}')
    return result


def name(value: Any) -> str:
    text = string(value)
    if not _NAME.fullmatch(text):
        raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")
    return text


def path(value: Any) -> str:
    text = string(value)
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    return text


def optional_path(value: Any) -> str:
    text = string(value)
    return path(text) if text else text


def metrics_file(value: Any) -> str:
    text = optional_path(value)
    if text and not text.endswith(".prom"):
        raise ValueError('must end in ".prom" (node_exporter reads only those)')
    return text


def host(value: Any) -> str:
    text = string(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not _HOSTNAME.fullmatch(text):
                raise ValueError("must be an IP address or a host name") from None
    return text


def port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _string_list(value: Any) -> Tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def argv(value: Any) -> Tuple[str, ...]:
    items = _string_list(value)
    if items and not items[0].startswith("/"):
        raise ValueError("must start with an absolute path to the program (no shell, no PATH)")
    if any(item == "" for item in items):
        raise ValueError("must not contain empty strings")
    return items


def target_names(value: Any) -> Tuple[str, ...]:
    return tuple(name(item) for item in _string_list(value))


def days(value: Any) -> Tuple[str, ...]:
    items = _string_list(value)
    if not items:
        raise ValueError('must name at least one day: "mon" … "sun"')
    return items


def peer_urls(value: Any) -> Tuple[str, ...]:
    from urllib.parse import urlsplit  # only configs that name peers need it

    items = _string_list(value)
    for item in items:
        parts = urlsplit(item)
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f'{item!r} is not of the form "https://HOST:PORT"')
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"{item!r} has a bad port") from None
    return items


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = string(value)
        if text not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return text

    # The man page lists the choices from here, so they are written once.
    check.choices = choices  # type: ignore[attr-defined]
    return check


def _method(value: Any) -> RestartMethod:
    return RestartMethod(_method_words(value))


_method_words = _choice(*(m.value for m in RestartMethod))
_method.choices = _method_words.choices  # type: ignore[attr-defined]


def choices_of(kind: str) -> Optional[Tuple[str, ...]]:
    """Given a value kind, return its allowed values if it is a choice, else None."""
    found: Optional[Tuple[str, ...]] = getattr(KINDS[kind], "choices", None)
    return found


KINDS: Dict[str, Callable[[Any], Any]] = {
    "string": string,
    "bool": boolean,
    "name": name,
    "path": path,
    "optional-path": optional_path,
    "metrics-file": metrics_file,
    "host": host,
    "port": port,
    # Every duration has a ceiling: beyond it the value is a typo, and the
    # arithmetic (select timeouts, now + x) would overflow. README and the
    # option descriptions state each one.
    "interval": _bounded(timedelta(seconds=1), timedelta(days=1)),
    "threshold": _bounded(timedelta(seconds=1), timedelta(days=3650)),
    "random-delay": _bounded(timedelta(0), timedelta(days=1)),
    "lease-duration": _bounded(timedelta(seconds=1), timedelta(days=1)),
    "probe-timeout": _bounded(timedelta(seconds=1), timedelta(minutes=5)),
    "ready-timeout": _bounded(timedelta(seconds=10), timedelta(hours=1)),
    "min-interval": _bounded(timedelta(hours=1), timedelta(days=365)),
    "lifetime": lifetime,
    "argv": argv,
    "target-names": target_names,
    "days": days,
    "peer-urls": peer_urls,
    "restart-method": _method,
    "target-kind": _choice(
        "auto", "kubeadm", "k3s", "microk8s", "k0s", "openshift", "aggregated", "pod"
    ),
    "process-names": target_names,
    "when-expired": _choice("immediately", "window"),
}
