"""Load, validate and normalise the TOML configuration into frozen values.

One pipeline: read → parse TOML → check every key against `agent.schema`
→ cross-field checks → `Config`. Every problem is collected and reported
together, each naming the file, the key and the bad value; unknown keys are
errors, so a typo can never silently switch something off.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.durations import parse_duration
from agent.schema import SCHEMA, TOP, Option, Table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = "/etc/kube-loopback-guard/config.toml"


@dataclass(frozen=True)
class Thresholds:
    warning: timedelta
    critical: timedelta


@dataclass(frozen=True)
class MetricsConfig:
    textfile: str  # "" = off


@dataclass(frozen=True)
class TargetConfig:
    name: str
    process_name: str
    host: str  # "" = from --bind-address
    port: int  # 0 = from --secure-port
    server_name: str
    timeout: timedelta
    lifetime: Optional[timedelta]  # None = "auto"


@dataclass(frozen=True)
class Config:
    path: Optional[str]  # None when built-in defaults are in force
    interval: timedelta
    state_dir: str
    thresholds: Thresholds
    metrics: MetricsConfig
    targets: Tuple[TargetConfig, ...]


class ConfigError(Exception):
    """The config is invalid; `problems` lists every problem found."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- value kinds: each returns the normalised value or raises ValueError ----


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _positive_duration(value: Any) -> timedelta:
    try:
        duration = parse_duration(_string(value))
    except ValueError:
        raise ValueError(
            'must be a duration: a whole number and one unit, such as "30s", "5m", "2h", "60d"'
        ) from None
    if duration <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return duration


def _probe_timeout(value: Any) -> timedelta:
    duration = _positive_duration(value)
    if duration > timedelta(minutes=5):
        raise ValueError("must be at most 5m")
    return duration


def _lifetime(value: Any) -> Optional[timedelta]:
    if value == "auto":
        return None
    try:
        return _positive_duration(value)
    except ValueError:
        raise ValueError('must be "auto" or a duration such as "365d"') from None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _name(value: Any) -> str:
    text = _string(value)
    if not _NAME.match(text):
        raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")
    return text


def _path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    return text


def _optional_path(value: Any) -> str:
    text = _string(value)
    return _path(text) if text else text


def _metrics_file(value: Any) -> str:
    text = _optional_path(value)
    if text and not text.endswith(".prom"):
        raise ValueError('must end in ".prom" (node_exporter reads only those)')
    return text


def _host(value: Any) -> str:
    text = _string(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", text):
                raise ValueError("must be an IP address or a host name") from None
    return text


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


_KINDS: Dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "name": _name,
    "path": _path,
    "optional-path": _optional_path,
    "metrics-file": _metrics_file,
    "host": _host,
    "port": _port,
    "positive-duration": _positive_duration,
    "probe-timeout": _probe_timeout,
    "lifetime": _lifetime,
}


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    return text if len(text) <= 80 else text[:77] + "..."


class _Collector:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: List[str] = []

    def add(self, key: str, message: str, value: Any = None, *, show_value: bool = True) -> None:
        where = f"{self.path}: {key}" if key else self.path
        suffix = f" (got {_show(value)})" if show_value else ""
        self.problems.append(f"{where}: {message}{suffix}")

    def table(self, table: Table, raw: Dict[str, Any], prefix: str) -> Dict[str, Any]:
        """Validate one table's options; return key → normalised value."""
        known = {option.key: option for option in table.options}
        children = {t.name for t in SCHEMA if t.name} if table is TOP else set()
        out: Dict[str, Any] = {}
        for key, value in raw.items():
            if key in children:
                continue
            if key not in known:
                close = difflib.get_close_matches(key, [*known, *children], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(prefix + key, "unknown key" + hint, show_value=False)
                continue
            out[key] = self.option(known[key], value, prefix + key)
        for option in table.options:
            if option.key not in out:
                out[option.key] = _KINDS[option.kind](option.default)
        return out

    def option(self, option: Option, value: Any, key: str) -> Any:
        try:
            return _KINDS[option.kind](value)
        except ValueError as error:
            self.add(key, str(error), value)
            return None


def _table_named(name: str) -> Table:
    return next(t for t in SCHEMA if t.name == name)


def build_config(raw: Dict[str, Any], path: str) -> Config:
    """Given parsed TOML and its file name, return the Config.

    Raise ConfigError listing every problem if anything is invalid.
    """
    errors = _Collector(path)
    top = errors.table(TOP, raw, "")

    sections: Dict[str, Dict[str, Any]] = {}
    for table in SCHEMA:
        if table is TOP or table.array:
            continue
        section = raw.get(table.name, {})
        if not isinstance(section, dict):
            errors.add(table.name, "must be a table", show_value=False)
            section = {}
        sections[table.name] = errors.table(table, section, table.name + ".")
    thresholds = sections["thresholds"]
    if (
        thresholds["warning"] is not None
        and thresholds["critical"] is not None
        and thresholds["critical"] >= thresholds["warning"]
    ):
        warning = raw["thresholds"].get("warning", "60d")
        errors.add(
            "thresholds.critical",
            f"must be shorter than thresholds.warning ({warning})",
            raw["thresholds"].get("critical", "14d"),
        )

    targets_table = _table_named("targets")
    targets_raw = raw.get("targets", [{}])
    if not isinstance(targets_raw, list) or not all(isinstance(t, dict) for t in targets_raw):
        errors.add("targets", "must be written as [[targets]] tables", show_value=False)
        targets_raw = []
    elif not targets_raw:
        errors.add("targets", "must list at least one target", show_value=False)
    targets: List[Dict[str, Any]] = []
    seen: Dict[str, int] = {}
    for index, entry in enumerate(targets_raw):
        values = errors.table(targets_table, entry, f"targets[{index}].")
        name = values["name"]
        if name is not None and name in seen:
            errors.add(
                f"targets[{index}].name",
                f"duplicates targets[{seen[name]}].name; names must be unique",
                name,
            )
        elif name is not None:
            seen[name] = index
        targets.append(values)

    if errors.problems:
        raise ConfigError(errors.problems)
    return Config(
        path=path,
        interval=top["interval"],
        state_dir=top["state_dir"],
        thresholds=Thresholds(**thresholds),
        metrics=MetricsConfig(**sections["metrics"]),
        targets=tuple(TargetConfig(**values) for values in targets),
    )


def parse_config(text: str, path: str) -> Config:
    """Given TOML text and its file name, return the Config or raise ConfigError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    return build_config(raw, path)


def load_config(path: Optional[str] = None) -> Config:
    """Read the config at `path`, or the default path when None.

    A missing default file means the built-in defaults (so the agent works on
    a kubeadm master with no config at all); a missing file named explicitly
    is an error. Raise ConfigError naming the file for anything wrong.
    """
    explicit = path is not None
    path = path if path is not None else DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"{path}: no such file"]) from None
        return default_config()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, path)


def default_config() -> Config:
    """Return the built-in defaults (path None)."""
    config = build_config({}, "<defaults>")
    return Config(
        path=None,
        interval=config.interval,
        state_dir=config.state_dir,
        thresholds=config.thresholds,
        metrics=config.metrics,
        targets=config.targets,
    )
