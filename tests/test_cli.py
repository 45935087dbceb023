"""The command line driven end to end, as a real subprocess, against a real
stand-in apiserver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import StandinFactory
from journald import FakeJournald

from agent.config.example import render_example

ROOT = Path(__file__).resolve().parent.parent
STATUS_LINE = re.compile(
    r"^KUBE-LOOPBACK-GUARD (OK|WARNING|CRITICAL|EXPIRED|UNKNOWN) - .+ \| "
    r"('[\w.-]+_days_left'=(-?[0-9.]+|U);[0-9.]+;[0-9.]+ ?)+$"
)


def klg(
    *args: str, timeout: float = 30, env_extra: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


def config_for(tmp_path: Path, *ports: int, extra: str = "") -> str:
    path = tmp_path / "config.toml"
    lines = [f'state_dir = "{tmp_path}/state"', extra]
    for index, port in enumerate(ports):
        lines += [
            "[[targets]]",
            f'name = "api{index}"',
            'process_name = ""',
            'host = "127.0.0.1"',
            f"port = {port}",
            'timeout = "2s"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("days", "state", "code"),
    [(300, "OK", 0), (30, "WARNING", 1), (5, "CRITICAL", 2), (-2, "EXPIRED", 2)],
)
def test_check_exit_code_and_first_line(
    tmp_path: Path, standin: StandinFactory, days: int, state: str, code: int
) -> None:
    api = standin(expires_in=timedelta(days=days))
    result = klg("check", "--config", config_for(tmp_path, api.port))
    assert result.returncode == code, result.stderr
    first, *details = result.stdout.splitlines()
    assert STATUS_LINE.match(first), first
    assert first.startswith(f"KUBE-LOOPBACK-GUARD {state} - api0: loopback certificate ")
    assert f"'api0_days_left'={days:.1f};60;14" in first or days < 0
    assert details[0].startswith(f"api0: {state}, ")
    assert f"probed 127.0.0.1:{api.port}" in details[0]


def test_check_json_shape(tmp_path: Path, standin: StandinFactory) -> None:
    api = standin(expires_in=timedelta(days=41), lifetime=timedelta(days=1096))
    result = klg("check", "--json", "--config", config_for(tmp_path, api.port))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["state"] == "warning"
    (target,) = data["targets"]
    assert target["name"] == "api0"
    assert target["source"] == "probe"
    assert target["lifetime_seconds"] == 1096 * 86400
    assert target["not_after"] == api.pair.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert re.fullmatch(r"CN=apiserver-loopback-client@[0-9]+", target["subject"])
    assert re.fullmatch(r"[0-9a-f]{64}", target["sha256"])
    assert target["process"] is None
    assert target["livez"] == "ok"
    assert target["error"] is None
    assert target["notes"] == []
    assert 41 * 86400 - 120 < target["seconds_left"] <= 41 * 86400


def test_worst_of_several_targets_and_target_filter(
    tmp_path: Path, standin: StandinFactory
) -> None:
    fine = standin(expires_in=timedelta(days=300))
    late = standin(expires_in=timedelta(days=10))
    config = config_for(tmp_path, fine.port, late.port)
    both = klg("check", "--config", config)
    assert both.returncode == 2
    assert both.stdout.startswith("KUBE-LOOPBACK-GUARD CRITICAL - api1: ")
    assert "'api0_days_left'=300.0;60;14 'api1_days_left'=10.0;60;14" in both.stdout
    one = klg("check", "--config", config, "--target", "api0")
    assert one.returncode == 0
    assert "api1" not in one.stdout
    missing = klg("check", "--config", config, "--target", "nope")
    assert missing.returncode == 3
    wording = "--target: no target named 'nope' (configured: api0, api1)"
    assert missing.stdout == f"KUBE-LOOPBACK-GUARD UNKNOWN - {wording}\n"
    assert wording in missing.stderr
    # The other verbs: the same words, EX_USAGE (64).
    for verb in ("plan", "restart"):
        other = klg(verb, "--config", config, "--target", "nope")
        assert other.returncode == 64, (verb, other.stderr)
        assert other.stderr == f"kube-loopback-guard: {wording}\n"


def test_no_apiserver_says_so_and_exits_3_within_the_timeout(tmp_path: Path) -> None:
    port = closed_port()
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[targets]]\nprocess_name = "klg-absent-{os.getpid()}"\nport = {port}\ntimeout = "2s"\n'
    )
    started = time.monotonic()
    result = klg("check", "--config", str(path))
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert result.stdout.startswith(
        "KUBE-LOOPBACK-GUARD UNKNOWN - kube-apiserver: no process named klg-absent-"
    )
    assert f"probe of 127.0.0.1:{port} failed: connection refused" in result.stdout
    assert "=U;60;14" in result.stdout
    assert elapsed < 2 + 5  # the 2 s probe deadline plus interpreter start


def test_silent_peer_is_unknown_within_the_deadline(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepts (kernel backlog), never speaks
        started = time.monotonic()
        result = klg("check", "--config", config_for(tmp_path, listener.getsockname()[1]))
        elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert "timed out after 2.0s" in result.stdout
    assert elapsed < 2 + 5


def test_invalid_config_exits_3_naming_file_key_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[thresholds]\nwarning = "7d"\n[[targets]]\nport = "x"\n')
    result = klg("check", "--config", str(path))
    assert result.returncode == 3
    # Nagios shows "(null)" for an empty stdout: the first line says why.
    assert result.stdout == (
        "KUBE-LOOPBACK-GUARD UNKNOWN - invalid configuration: "
        f"{path}: thresholds.critical: must be shorter than thresholds.warning"
        ' (7d) (got "14d") (2 problems, see stderr)\n'
    )
    assert f"{path}: thresholds.critical: must be shorter than thresholds.warning" in result.stderr
    assert f'{path}: targets[0].port: must be an integer (got "x")' in result.stderr


def test_missing_config_named_explicitly(tmp_path: Path) -> None:
    result = klg("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 3
    assert f"{tmp_path}/nope.toml: no such file" in result.stderr


def test_config_verb(tmp_path: Path) -> None:
    example = klg("config", "--example")
    assert example.returncode == 0
    assert example.stdout == render_example() == (ROOT / "examples/config.toml").read_text()
    good = tmp_path / "good.toml"
    good.write_text(example.stdout)
    assert klg("config", "--config", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = 5\n")
    result = klg("config", "--config", str(bad))
    assert result.returncode == 78
    assert f"{bad}: interval: must be a duration" in result.stderr


def test_config_notes_a_restart_due_only_after_warning(tmp_path: Path) -> None:
    window = '[[restart.windows]]\ndays = ["sun"]\nstart = "02:00"\nend = "04:00"\n'
    quiet = tmp_path / "quiet.toml"
    # The default before_expiry (90d) is longer than the warning threshold (60d).
    quiet.write_text("[restart]\nenabled = true\n" + window)
    result = klg("config", "--config", str(quiet))
    assert result.returncode == 0 and "note:" not in result.stdout
    late = tmp_path / "late.toml"
    late.write_text('[restart]\nenabled = true\nbefore_expiry = "30d"\n' + window)
    result = klg("config", "--config", str(late))
    assert result.returncode == 0
    assert (
        "note: restart.before_expiry (30d) is not longer than thresholds.warning (60d): "
        "WARNING will be raised before the agent restarts the apiserver"
    ) in result.stdout


def test_run_refuses_invalid_config_with_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    result = klg("run", "--config", str(bad))
    assert result.returncode == 78
    assert "nope: unknown key" in result.stderr


def test_run_by_hand_speaks_on_stderr_and_to_journald(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    journald = FakeJournald(tmp_path / "journal.sock")
    try:
        by_hand = klg("run", "--config", str(bad), env_extra={"KLG_JOURNAL_SOCKET": journald.path})
        assert by_hand.returncode == 78
        assert "nope: unknown key" in by_hand.stderr
        assert "nope: unknown key" in journald.receive().fields["MESSAGE"]
        # Under systemd (INVOCATION_ID, stderr not a terminal) only the journal hears it.
        unit = klg(
            "run",
            "--config",
            str(bad),
            env_extra={"KLG_JOURNAL_SOCKET": journald.path, "INVOCATION_ID": "0" * 32},
        )
        assert unit.returncode == 78
        assert unit.stderr == ""
        assert "nope: unknown key" in journald.receive().fields["MESSAGE"]
    finally:
        journald.close()


@pytest.mark.parametrize(
    ("args", "code", "state"),
    [
        ([], 0, "OK"),
        (["--expires-in", "30d"], 1, "WARNING"),
        (["--expires-in", "10d", "--lifetime", "1096d"], 2, "CRITICAL"),
        (["--expires-in=-3d"], 2, "EXPIRED"),
        (["--expires-in", "-3d"], 2, "EXPIRED"),  # as README and --help write it
    ],
)
def test_demo(args: List[str], code: int, state: str) -> None:
    result = klg("demo", *args)
    assert result.returncode == code, result.stderr
    assert "Stand-in kube-apiserver on 127.0.0.1:" in result.stdout
    assert f"KUBE-LOOPBACK-GUARD {state} - demo-apiserver: loopback certificate" in result.stdout


def test_demo_json() -> None:
    result = klg("demo", "--json", "--expires-in", "100d", "--lifetime", "1096d")
    data = json.loads(result.stdout)
    assert data["targets"][0]["lifetime_seconds"] == 1096 * 86400
    assert data["targets"][0]["livez"] == "ok"


def test_status_without_state(tmp_path: Path) -> None:
    result = klg("status", "--config", config_for(tmp_path, 6443))
    assert result.returncode == 3
    assert "no state yet" in result.stdout
    assert not (tmp_path / "state").exists()  # status never creates anything


def test_status_shows_what_the_daemon_saved(tmp_path: Path, standin: StandinFactory) -> None:
    from agent.check import run_check
    from agent.config.loader import load_config
    from agent.observe.discover import ProcessFinder
    from agent.observe.probe import probe
    from agent.state.records import AgentState, target_state_from
    from agent.state.store import save_state

    api = standin(expires_in=timedelta(days=20))
    config = load_config(config_for(tmp_path, api.port))
    report = run_check(
        config.targets,
        config.thresholds,
        ProcessFinder(),
        probe,
        lambda: datetime.now(timezone.utc),
    )
    targets = {
        t.target.name: target_state_from(t, None, checked_at=report.checked_at)
        for t in report.targets
    }
    save_state(config.state_dir, AgentState(targets=targets, restarts=()))
    text = klg("status", "--config", str(config.path))
    assert text.returncode == 0
    assert "api0: WARNING (checked " in text.stdout
    assert "loopback certificate expires" in text.stdout
    data = json.loads(klg("status", "--json", "--config", str(config.path)).stdout)
    assert data["targets"]["api0"]["state"] == "warning"
    assert data["targets"]["api0"]["sha256"] == report.targets[0].facts.probe.cert.sha256  # type: ignore[union-attr]


def test_help_lists_every_verb_and_each_verb_explains() -> None:
    result = klg("--help")
    assert result.returncode == 0
    for verb in ("check", "run", "status", "demo", "config"):
        assert verb in result.stdout
        sub = klg(verb, "--help")
        assert sub.returncode == 0
        assert "--config PATH" in sub.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # Each gave a traceback (OverflowError, ValueError) before. Usage errors:
        # EX_USAGE (64), or UNKNOWN (3) for demo, a plugin like check.
        (["plan", "--at", "0001-01-01T00:30:00+01:00"], 64, "is not an RFC 3339 time"),
        (["demo", "--expires-in", "999999999d"], 3, "write a duration between -36500d and 36500d"),
        (["demo", "--lifetime", "0s"], 3, "write a duration between 1s and 36500d"),
        (["demo", "--lifetime", "999999999d"], 3, "write a duration between 1s and 36500d"),
        (["demo", "--expires-in=-36500d"], 3, "cannot build the stand-in certificate"),
    ],
)
def test_out_of_range_arguments_are_clean_errors(
    tmp_path: Path, args: List[str], code: int, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{tmp_path}/state"\n')
    result = klg(*args, "--config", str(config))
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["--target"], ["extra"], ["--json", "--json=x"]])
def test_check_usage_error_is_unknown_with_a_status_line(args: List[str]) -> None:
    result = klg("check", *args)
    assert result.returncode == 3, result.stderr  # not argparse's 2, read as CRITICAL
    first = result.stdout.splitlines()[0]
    assert first.startswith("KUBE-LOOPBACK-GUARD UNKNOWN - usage error: ")
    assert first.endswith("(see kube-loopback-guard check --help)")
    assert "usage: kube-loopback-guard check" in result.stderr


def test_other_verbs_usage_error_is_ex_usage() -> None:
    for args in (["plan", "--bogus"], ["bogus"], ["restart", "--at"]):
        result = klg(*args)
        assert result.returncode == 64, (args, result.stderr)
        assert result.stdout == ""


def test_every_verb_answers_an_unknown_option_as_a_usage_error() -> None:
    # Each verb's parser must name itself (set_defaults parser=…): without it,
    # an unknown option after a valid command line was a traceback.
    from agent.cli import VERBS

    for verb in VERBS:
        args = [verb, *(["release"] if verb == "lease" else []), "--bogus"]
        result = klg(*args)
        plugin = verb in ("check", "demo")
        assert result.returncode == (3 if plugin else 64), (args, result.stderr)
        assert "Traceback" not in result.stderr, args
        assert "unrecognized arguments: --bogus" in result.stderr, args


def test_check_json_on_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    result = klg("check", "--json", "--config", str(bad))
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["state"] == "UNKNOWN"
    assert data["summary"].startswith("invalid configuration: ")
    assert data["problems"] == [f"{bad}: nope: unknown key"] or "nope" in data["problems"][0]


def test_demo_expiring_after_its_lifetime_is_a_clean_error() -> None:
    result = klg("demo", "--expires-in", "400d", "--lifetime", "365d")
    assert result.returncode == 3
    assert result.stdout == (
        "KUBE-LOOPBACK-GUARD UNKNOWN - --expires-in 400d must not exceed --lifetime 365d"
        " (a positive duration)\n"
    )
    assert "Traceback" not in result.stderr


def test_status_json_on_every_path(tmp_path: Path) -> None:
    result = klg("status", "--json", "--config", config_for(tmp_path, 6443))
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["error"].startswith("no state yet")
    assert data["targets"] == {}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{not json")
    broken = klg("status", "--json", "--config", config_for(tmp_path, 6443))
    assert broken.returncode == 3
    assert json.loads(broken.stdout)["error"].startswith("cannot read ")


NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def others_can_run(path: Path) -> bool:
    """Whether a user with no rights of its own can reach path (o+x on every directory)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in path.resolve().parents)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run status as another user")
def test_status_with_an_unreadable_config_reads_the_default_state_dir(tmp_path: Path) -> None:
    # The system's interpreter: a virtualenv's may live under /root (0700).
    python = Path("/usr/bin/python3")
    if not (others_can_run(ROOT / "agent") and python.exists()):
        pytest.skip(f"user nobody cannot reach this checkout ({ROOT}), or no {python}")
    config = tmp_path / "config.toml"
    config.write_text('state_dir = "/elsewhere"\n')
    config.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*NOBODY, str(python), "-m", "agent", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd="/",
    )
    assert "Permission denied" in result.stderr
    assert "reading the default state_dir /var/lib/kube-loopback-guard instead" in result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == "/var/lib/kube-loopback-guard/state.json"
    assert data["config_note"].startswith("cannot use the configuration")
    assert result.returncode in (0, 3)  # 3: no daemon ran on this machine


def test_restart_dry_run_force_names_the_target_once(
    tmp_path: Path, standin: StandinFactory
) -> None:
    api = standin(expires_in=timedelta(days=300))
    window = '[[restart.windows]]\ndays = ["sun"]\nstart = "02:00"\nend = "04:00"\n'
    config = config_for(tmp_path, api.port, extra="[restart]\nenabled = true\n" + window)
    result = klg("restart", "--config", config, "--dry-run", "--force")
    assert result.stdout.count("api0") == 1, result.stdout


def test_check_crash_is_still_an_unknown_status_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bug cannot be made on purpose: the check itself is replaced by one
    # that raises, to see what the plugin prints around it.
    import agent.check
    from agent.cli import main

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(agent.check, "run_check", broken)
    code = main(["check", "--config", config_for(tmp_path, 6443)])
    out = capsys.readouterr().out
    assert code == 3
    assert out == "KUBE-LOOPBACK-GUARD UNKNOWN - internal error: RuntimeError: boom\n"


LOADED = (
    "import sys, contextlib, io\n"
    "from agent.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
    "    try:\n"
    "        main(sys.argv[1:])\n"
    "    except SystemExit:\n"
    "        pass\n"
    "print(' '.join(sorted(sys.modules)))\n"
)


def modules_loaded_by(*argv: str) -> List[str]:
    """The modules a fresh interpreter has loaded after running the CLI with argv."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_help_loads_neither_psutil_nor_the_config_machinery() -> None:
    for argv in (["--help"], ["check", "--help"], ["--version"]):
        loaded = modules_loaded_by(*argv)
        heavy = [
            m
            for m in loaded
            if m.split(".")[0] in ("psutil", "cryptography", "ssl", "tomllib", "dataclasses")
            or m.startswith(("agent.config.", "agent.observe", "agent.report", "agent.judge"))
        ]
        assert heavy == [], (argv, heavy)


def test_check_loads_no_restart_window_or_logging_machinery(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[targets]]\nname = "api"\nprocess_name = ""\nport = 1\ntimeout = "1s"\n')
    loaded = modules_loaded_by("check", "--config", str(config))
    assert "agent.check" in loaded  # it did check
    unwanted = {"agent.judge.window", "zoneinfo", "logging", "difflib", "agent.restart.restarter"}
    assert unwanted.isdisjoint(loaded), unwanted.intersection(loaded)


def test_a_verbs_own_parser_parses_and_explains_like_the_whole_one() -> None:
    # main() builds only the verb's parser when argv starts with one (a cold
    # `check` then skips the seven others): it must be the same parser.
    import argparse

    from agent.cli import VERBS, build_parser

    def sub_parsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(action.choices)

    whole = sub_parsers(build_parser())
    assert list(whole) == list(VERBS)
    for verb in VERBS:
        own = sub_parsers(build_parser(verb))
        assert list(own) == [verb]
        assert own[verb].format_help() == whole[verb].format_help()
        assert own[verb].plugin == whole[verb].plugin
        words = [verb, "--config", "/x.toml", *(["release"] if verb == "lease" else [])]
        assert (
            vars(build_parser(verb).parse_args(words)).keys()
            == vars(build_parser().parse_args(words)).keys()
        )


@pytest.mark.parametrize(("argv", "collecting"), [(["config"], False), (["run"], True)])
def test_the_collector_is_off_for_short_verbs_only_and_restored(
    argv: List[str], collecting: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from agent import cli

    seen: List[bool] = []

    def handler(args: object) -> int:
        seen.append(gc.isenabled())
        return 0

    # In-process, with the verb's work replaced: only main()'s handling of
    # the cyclic garbage collector is under test here.
    monkeypatch.setattr(cli, f"cmd_{argv[0]}", handler)
    assert gc.isenabled()
    assert cli.main(argv) == 0
    assert seen == [collecting]
    assert gc.isenabled()
