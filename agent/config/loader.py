"""Load, validate and normalise the TOML configuration into frozen values.

One pipeline: read → parse TOML → check every key against `agent.schema`
→ cross-field checks → `Config`. Every problem is collected and reported
together, each naming the file, the key and the bad value; unknown keys are
errors, so a typo can never silently switch something off.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from agent.config import DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH
from agent.config.durations import format_duration
from agent.config.schema import TOP, Table, children_of, table_named
from agent.config.trust import trust_problems
from agent.config.types import (
    Config,
    LeaseConfig,
    MetricsConfig,
    RestartConfig,
    RestartMethod,
    TargetConfig,
    Thresholds,
)
from agent.config.values import KINDS
from agent.record import replace
from agent.text import one_line

if TYPE_CHECKING:
    from agent.judge.window import MaintenanceWindow


class ConfigError(Exception):
    """The config is invalid; `problems` lists every problem found."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + one_line(value, limit=None) + '"'
    return text if len(text) <= 80 else text[:77] + "..."


class _Collector:
    """Walks the raw TOML along the schema, collecting every problem."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: List[str] = []

    def add(self, key: str, message: str, value: Any = None, *, show_value: bool = True) -> None:
        where = f"{self.path}: {one_line(key, limit=None)}" if key else self.path
        suffix = f" (got {_show(value)})" if show_value else ""
        self.problems.append(f"{where}: {message}{suffix}")

    def table(self, table: Table, raw: Dict[str, Any], prefix: str) -> Dict[str, Any]:
        """Validate one table's own options; return key → normalised value (None if bad)."""
        known = {option.key: option for option in table.options}
        children = {child.key for child in children_of(table)}
        out: Dict[str, Any] = {}
        for key, value in raw.items():
            if key in children:
                continue
            if key not in known:
                import difflib  # only for a typo: not on every start

                close = difflib.get_close_matches(key, [*known, *children], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(prefix + key, "unknown key" + hint, show_value=False)
                continue
            try:
                out[key] = KINDS[known[key].kind](value)
            except ValueError as error:
                self.add(prefix + key, str(error), value)
                out[key] = None
        for option in table.options:
            if option.key not in out:
                if option.required:
                    self.add(prefix + option.key, "is required", show_value=False)
                    out[option.key] = None
                else:
                    out[option.key] = KINDS[option.kind](option.default)
        return out

    def section(self, raw: Dict[str, Any], table: Table, prefix: str) -> Optional[Dict[str, Any]]:
        """The raw plain sub-table `table.key` of `raw`; {} when absent (None when
        absent and the table is optional)."""
        section = raw.get(table.key)
        if section is None:
            return None if table.optional else {}
        if not isinstance(section, dict):
            self.add(prefix + table.key, "must be a table", show_value=False)
            return {}
        return section

    def entries(self, raw: Dict[str, Any], table: Table, prefix: str) -> List[Dict[str, Any]]:
        default: List[Dict[str, Any]] = [{}] * table.default_entries
        entries = raw.get(table.key, default)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.add(prefix + table.key, f"must be written as [[{table.name}]] tables", False)
            return []
        return entries


def _targets(errors: _Collector, raw: Dict[str, Any]) -> List[Dict[str, Any]]:
    table = table_named("targets")
    entries = errors.entries(raw, table, "")
    if "targets" in raw and isinstance(raw["targets"], list) and not raw["targets"]:
        errors.add("targets", "must list at least one target", show_value=False)
    targets: List[Dict[str, Any]] = []
    seen: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        values = errors.table(table, entry, f"targets[{index}].")
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
    return targets


def _windows(errors: _Collector, raw: Dict[str, Any]) -> List[MaintenanceWindow]:
    table = table_named("restart.windows")
    windows: List[MaintenanceWindow] = []
    for index, entry in enumerate(errors.entries(raw, table, "restart.")):
        # Imported here: a config without windows (every `check`) needs no zoneinfo.
        from agent.judge.window import (
            WindowError,
            parse_clock,
            parse_days,
            parse_window,
            parse_zone,
        )

        prefix = f"restart.windows[{index}]."
        values = errors.table(table, entry, prefix)
        if any(values[key] is None for key in ("days", "start", "end", "timezone")):
            continue
        # Each value on its own, so an entry reports all its problems at once.
        parts: Dict[str, Any] = {}
        for key, parse in (
            ("days", parse_days),
            ("start", lambda text: parse_clock(text, "start")),
            ("end", lambda text: parse_clock(text, "end")),
            ("timezone", parse_zone),
        ):
            try:
                parts[key] = parse(values[key])
            except WindowError as error:
                errors.add(prefix + error.field, str(error), entry.get(error.field))
        if len(parts) == 4:
            # Each value is valid; parse_window adds the rules between them
            # (an end equal to the start is refused).
            try:
                windows.append(
                    parse_window(values["days"], values["start"], values["end"], values["timezone"])
                )
            except WindowError as error:
                errors.add(prefix + error.field, str(error), entry.get(error.field))
    return windows


def _restart(
    errors: _Collector, raw: Dict[str, Any], target_names: List[str], discovering: bool
) -> Optional[RestartConfig]:
    table = table_named("restart")
    section = errors.section(raw, table, "") or {}
    values = errors.table(table, section, "restart.")
    windows = _windows(errors, section)
    lease_table = table_named("restart.lease")
    lease_raw = errors.section(section, lease_table, "restart.")
    lease = None
    if lease_raw is not None:
        lease_values = errors.table(lease_table, lease_raw, "restart.lease.")
        if None not in lease_values.values():
            lease = LeaseConfig(**lease_values)
    if None in values.values():
        return None
    for name in values["targets"]:
        # Discovered apiservers are named only at check time ("k3s", "ns/pod").
        if name not in target_names and not discovering:
            errors.add("restart.targets", f"names no configured target {name!r}", name)
    if values["method"] is RestartMethod.COMMAND and not values["command"]:
        errors.add("restart.command", 'is required when method = "command"', show_value=False)
    if values["method"] is RestartMethod.SYSTEMD and not values["unit"]:
        errors.add("restart.unit", 'is required when method = "systemd"', values["unit"])
    if values["enabled"] and not windows and not section.get("windows"):
        # Without a window it would restart only after expiry, once the outage has begun.
        errors.add(
            "restart.windows",
            "is empty: with enabled = true at least one [[restart.windows]] is required "
            "(without one a restart would only happen after expiry, once the outage has "
            'begun); a whole day is start = "00:00", end = "24:00"',
            show_value=False,
        )
    return RestartConfig(**values, windows=tuple(windows), lease=lease)


def _discovers_all(values: Dict[str, Any]) -> bool:
    """Given one target's validated values (None where invalid), return
    whether it stands for every apiserver."""
    return TargetConfig(**values).discovers_all


def build_config(raw: Dict[str, Any], path: str) -> Config:
    """Given parsed TOML and its file name, return the Config.

    Raise ConfigError listing every problem if anything is invalid.
    """
    errors = _Collector(path)
    top = errors.table(TOP, raw, "")
    thresholds = errors.table(
        table_named("thresholds"),
        errors.section(raw, table_named("thresholds"), "") or {},
        "thresholds.",
    )
    metrics = errors.table(
        table_named("metrics"), errors.section(raw, table_named("metrics"), "") or {}, "metrics."
    )
    if (
        thresholds["warning"] is not None
        and thresholds["critical"] is not None
        and thresholds["critical"] >= thresholds["warning"]
    ):
        written = raw.get("thresholds", {})
        errors.add(
            "thresholds.critical",
            f"must be shorter than thresholds.warning ({written.get('warning', '60d')})",
            written.get("critical", "14d"),
        )
    targets = _targets(errors, raw)
    names = [t["name"] for t in targets if t["name"]]
    restart = _restart(errors, raw, names, any(_discovers_all(t) for t in targets))
    critical = thresholds["critical"]
    if restart is not None and critical is not None and restart.before_expiry <= critical:
        section = raw.get("restart", {})
        errors.add(
            "restart.before_expiry",
            "must be longer than thresholds.critical "
            f"({raw.get('thresholds', {}).get('critical', '14d')}): a restart due only "
            "after CRITICAL would come too late to prevent the alarm",
            section.get("before_expiry", "90d") if isinstance(section, dict) else None,
        )
    if errors.problems or restart is None:
        raise ConfigError(errors.problems or [f"{path}: invalid [restart] table"])
    return Config(
        path=path,
        interval=top["interval"],
        state_dir=top["state_dir"],
        thresholds=Thresholds(**thresholds),
        metrics=MetricsConfig(**metrics),
        targets=tuple(TargetConfig(**values) for values in targets),
        restart=restart,
    )


def parse_config(text: str, path: str) -> Config:
    """Given TOML text and its file name, return the Config or raise ConfigError."""
    # Imported here: the built-in defaults (no config file) need no parser.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib

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
            # The owner and mode of the file actually read, not of whatever
            # the path names a moment later.
            info = os.fstat(handle.fileno())
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
    config = parse_config(text, path)
    problems = trust_problems(config, path, info)
    if problems:
        raise ConfigError(problems)
    return config


def config_notes(config: Config) -> List[str]:
    """Given a valid config, return what is allowed but worth saying: a
    before_expiry not longer than thresholds.warning means WARNING is raised
    before the agent restarts, so it no longer means "a person must act"."""
    notes = []
    restart = config.restart
    if restart.enabled and restart.before_expiry <= config.thresholds.warning:
        notes.append(
            f"note: restart.before_expiry ({format_duration(restart.before_expiry)}) is not "
            f"longer than thresholds.warning ({format_duration(config.thresholds.warning)}): "
            "WARNING will be raised "
            "before the agent restarts the apiserver"
        )
    return notes


def default_config() -> Config:
    """Return the built-in defaults (path None)."""
    return replace(build_config({}, "<defaults>"), path=None)
