"""Fuzz: config text → load → validate → use.

Property: any text is either a Config or a ConfigError whose every problem is
one line naming the file; and a Config that loads can be used: its waits go
through select(), its durations through the pure judgement (assess, decide)
at today's dates, and its target names match the documented pattern.
"""

from __future__ import annotations

import os
import re
import select
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

from fuzzing import PropertyBroken, inputs
from hypothesis import event, given
from hypothesis import strategies as st
from tomltext import toml_document

from agent.check import assumed_lifetime
from agent.config.loader import ConfigError, parse_config
from agent.config.schema import SCHEMA, Option, Table, children_of
from agent.config.types import Config
from agent.judge.assess import assess
from agent.judge.decide import decide
from agent.model import ApiserverProcess, TargetFacts

PATH = "/etc/kube-loopback-guard/fuzz.toml"
# The documented pattern (README, schema): 1-63 letters, digits, '.', '_', '-'.
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_junk = st.one_of(
    _text,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(),
    st.lists(_text, max_size=3),
    st.dictionaries(st.sampled_from(["a", "name"]), _text, max_size=2),
)
# Sizes near the edges: of select() (about 106752 days of seconds), of
# datetime (999999999 days), of the duration syntax (nine digits).
_number = st.one_of(
    st.integers(1, 1000),
    st.integers(0, 999999999),
    st.sampled_from([0, 10**9, 106752, 110000, 2932897, 999999999]),
)
_duration = st.one_of(
    st.builds("{}{}".format, _number, st.sampled_from(["s", "m", "h", "d", "d", "d", "w", ""])),
    st.sampled_from(["auto", "5m", "60d", "1h30m", " 2h", "-1s", "1e3s", "٣s"]),
)
_name = st.one_of(
    st.text(st.sampled_from("abk0.-_\n ü"), min_size=0, max_size=70),
    st.sampled_from(["kube-apiserver", "a" * 63, "a" * 64, "kube\n", ".kube", "kube.2_x"]),
)
_path = st.one_of(
    st.builds("/tmp/{}".format, _text), st.sampled_from(["", "/var/lib/klg", "rel", "/m.prom"])
)
_argv = st.lists(st.one_of(_path, _text), max_size=3)
_day = st.sampled_from(["mon", "Sun", "saturday", "", "sun\n", "xyz"])
_clock = st.one_of(
    st.builds("{:02d}:{:02d}".format, st.integers(0, 30), st.integers(0, 70)),
    st.sampled_from(["2:00", "24:00", "02:00:00", ""]),
)
_zone = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Apia", "Nowhere/City", "../etc", ""]
)
_host = st.sampled_from(["", "127.0.0.1", "[::1]", "::1", "host.example", "-bad", "ü", " 1.2.3.4"])
_url = st.builds(
    "https://{}:{}".format, st.sampled_from(["10.0.0.1", "[::1]", "h", ""]), _number
) | st.sampled_from(["http://x", "https://x/path", "https://x:99999"])

KIND_VALUES: Dict[str, Any] = {
    "string": _text,
    "bool": st.booleans(),
    "name": _name,
    "path": _path,
    "optional-path": _path,
    "metrics-file": _path,
    "host": _host,
    "port": st.integers(-10, 70000),
    "duration": _duration,
    "positive-duration": _duration,
    "probe-timeout": _duration,
    "ready-timeout": _duration,
    "min-interval": _duration,
    "lifetime": _duration,
    "argv": _argv,
    "target-names": st.lists(_name, max_size=3),
    "days": st.lists(_day, max_size=3),
    "peer-urls": st.lists(_url, max_size=2),
    "restart-method": st.sampled_from(["systemd", "static-pod", "command", "kill"]),
    "when-expired": st.sampled_from(["immediately", "window", "never"]),
}


def _is_duration(option: Option) -> bool:
    """Whether the option holds a duration, whatever its kind is called."""
    default = option.example if option.example is not None else option.default
    return isinstance(default, str) and (
        default == "auto" or re.fullmatch(r"[0-9]+[smhd]", default) is not None
    )


def values_of(option: Option) -> st.SearchStrategy[Any]:
    """Values of the option's kind: its own strategy, any duration for kinds
    added since (bounded ones are named per key), else text."""
    if option.kind in KIND_VALUES:
        return KIND_VALUES[option.kind]  # type: ignore[no-any-return]
    return _duration if _is_duration(option) else _text


def table_values(table: Table) -> st.SearchStrategy[Dict[str, Any]]:
    """A raw table along the schema: some of its keys, mostly of their kind,
    sometimes junk; sometimes an unknown key; its child tables likewise."""
    optional: Dict[str, st.SearchStrategy[Any]] = {}
    for option in table.options:
        kind = values_of(option)
        default = st.just(option.example if option.example is not None else option.default)
        # Mostly sound values, so that most documents load and get used.
        optional[option.key] = st.one_of(*[default] * 6, *[kind] * 3, _junk)
    optional["intervall"] = _junk  # a typo: an unknown key
    for child in children_of(table):
        entries = table_values(child)
        optional[child.key] = st.lists(entries, max_size=3) if child.array else entries
    return st.fixed_dictionaries({}, optional=optional)


_top = next(t for t in SCHEMA if not t.name)
wild = table_values(_top).map(toml_document)


def _sound(table: Table) -> Dict[str, Any]:
    return {
        option.key: option.example if option.example is not None else option.default
        for option in table.options
    }


_BY_NAME = {table.name: table for table in SCHEMA}
_OPTIONS = [(table.name, option) for table in SCHEMA for option in table.options]
# Durations and names three times as often: their bounds are where defects were.
_OPTIONS += [
    (table, option) for table, option in _OPTIONS if _is_duration(option) or option.kind == "name"
] * 2


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A sound document (every key at its default or example) with one to
    three keys set to values of their kind or junk: most such documents load,
    so the values reach `use`."""
    document = _sound(_BY_NAME[""])
    document["thresholds"] = _sound(_BY_NAME["thresholds"])
    document["metrics"] = _sound(_BY_NAME["metrics"])
    document["targets"] = [_sound(_BY_NAME["targets"])]
    restart = _sound(_BY_NAME["restart"])
    restart["windows"] = [_sound(_BY_NAME["restart.windows"])]
    if draw(st.booleans()):
        restart["lease"] = _sound(_BY_NAME["restart.lease"])
    document["restart"] = restart
    places = {
        "": document,
        "thresholds": document["thresholds"],
        "metrics": document["metrics"],
        "targets": document["targets"][0],
        "restart": restart,
        "restart.windows": restart["windows"][0],
        "restart.lease": restart.get("lease", {}),
    }
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        table, option = draw(st.sampled_from(_OPTIONS))
        kind = values_of(option)
        places[table][option.key] = draw(st.one_of(*[kind] * 8, _junk))
    return toml_document(document)


# Raw text: mostly not TOML, which must still be a clean ConfigError.
raw_text = st.text(max_size=200)
config_texts = st.one_of(mutated(), mutated(), mutated(), wild, raw_text)


def use(config: Config) -> None:
    """Use a loaded config as the daemon and `check` would; raise what they would."""
    read, write = os.pipe()
    try:
        os.write(write, b"x")
        # The daemon's wait between checks, and each probe's deadline.
        waits = [config.interval] + [t.timeout for t in config.targets]
        for wait in waits:
            select.select([read], [], [], wait.total_seconds())
    finally:
        os.close(read)
        os.close(write)
    policy = config.restart
    for target in config.targets:
        if not TARGET_NAME.fullmatch(target.name):
            raise PropertyBroken(
                f"target name {target.name!r} passed but is not 1-63 of [A-Za-z0-9_.-]",
            )
        process = ApiserverProcess(4242, target.name, NOW - timedelta(days=30), 6443, None)
        facts = TargetFacts(target.name, process, None, None)
        assessment = assess(facts, config.thresholds, assumed_lifetime(target, None), NOW)
        decide(assessment, policy, NOW - timedelta(days=1), "node-a", NOW)
    if policy.lease is not None:
        # The Lease's expiry as the lease code computes it.
        _ = NOW + policy.lease.duration


@inputs(3000)
@given(config_texts)
def test_config_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        config = parse_config(text, PATH)
    except ConfigError as error:
        problems: List[str] = error.problems
        assert problems
        for problem in problems:
            assert problem.startswith(PATH + ":"), problem
            assert "\n" not in problem and "\r" not in problem, problem
        event("ConfigError")
        return
    event("loaded")
    use(config)
