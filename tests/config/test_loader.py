from __future__ import annotations

import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from agent.config.loader import ConfigError, default_config, load_config, parse_config
from agent.config.types import TargetConfig


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/klg.toml")
    return caught.value.problems


def test_defaults() -> None:
    config = default_config()
    assert config.path is None
    assert config.interval == timedelta(minutes=5)
    assert config.state_dir == "/var/lib/kube-loopback-guard"
    assert config.thresholds.warning == timedelta(days=60)
    assert config.thresholds.critical == timedelta(days=14)
    # Longer than warning: restarted before anyone is warned (issue 8.9).
    assert config.restart.before_expiry == timedelta(days=90)
    assert config.targets == (
        TargetConfig(
            name="kube-apiserver",
            process_name="kube-apiserver",
            host="",
            port=0,
            server_name="apiserver-loopback-client",
            timeout=timedelta(seconds=5),
            lifetime=None,
        ),
    )


def test_full_config() -> None:
    config = parse_config(
        """
        interval = "30s"
        state_dir = "/tmp/klg"
        [thresholds]
        warning = "90d"
        critical = "30d"
        [[targets]]
        name = "kube-apiserver"
        lifetime = "1096d"
        [[targets]]
        name = "openshift-apiserver"
        process_name = ""
        host = "::1"
        port = 8443
        timeout = "2s"
        """,
        "/etc/klg.toml",
    )
    assert config.interval == timedelta(seconds=30)
    assert config.thresholds.warning == timedelta(days=90)
    assert [t.name for t in config.targets] == ["kube-apiserver", "openshift-apiserver"]
    assert config.targets[0].lifetime == timedelta(days=1096)
    second = config.targets[1]
    assert (second.process_name, second.host, second.port) == ("", "::1", 8443)
    assert second.timeout == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('interval = "5x"', "/etc/klg.toml: interval: must be a duration: a whole number"),
        ('interval = "0s"', '/etc/klg.toml: interval: must be between 1s and 1d (got "0s")'),
        # Unbounded, these passed `config` and crashed `run` (select) or `check`.
        ('interval = "110000d"', 'interval: must be between 1s and 1d (got "110000d")'),
        (
            '[thresholds]\nwarning = "999999999d"',
            "thresholds.warning: must be between 1s and 3650d",
        ),
        (
            '[[targets]]\nlifetime = "999999999d"',
            'lifetime: must be "auto" or a duration of at most 36500d',
        ),
        (
            '[restart]\nbefore_expiry = "999999999d"',
            "restart.before_expiry: must be between 1s and 3650d",
        ),
        ('[restart]\nrandom_delay = "2d"', "restart.random_delay: must be between 0s and 1d"),
        (
            '[restart]\nmin_interval = "999999999d"',
            "restart.min_interval: must be between 1h and 365d",
        ),
        ('[[targets]]\ntimeout = "999999999d"', "timeout: must be between 1s and 5m"),
        ('[[targets]]\nname = "kube\\n"', "targets[0].name: must be 1-63 letters"),
        ("interval = 300", "/etc/klg.toml: interval: must be a duration: a whole number"),
        ('state_dir = "var/lib"', 'state_dir: must be an absolute path (got "var/lib")'),
        ('intervall = "5m"', "intervall: unknown key (did you mean 'interval'?)"),
        ('[thresholds]\nwarn = "1d"', "thresholds.warn: unknown key (did you mean 'warning'?)"),
        (
            '[thresholds]\nwarning = "10d"',
            'thresholds.critical: must be shorter than thresholds.warning (10d) (got "14d")',
        ),
        ('[thresholds]\ncritical = "60d"', "thresholds.critical: must be shorter than"),
        ("thresholds = 3", "thresholds: must be a table"),
        ("metrics = 3", "metrics: must be a table"),
        ('[metrics]\ntextfile = "/tmp/x.txt"', 'metrics.textfile: must end in ".prom"'),
        ('[metrics]\ntextfile = "x.prom"', "metrics.textfile: must be an absolute path"),
        ("targets = []", "targets: must list at least one target"),
        ('targets = "x"', "targets: must be written as [[targets]] tables"),
        ("[[targets]]\nport = 70000", "targets[0].port: must be between 0 and 65535 (got 70000)"),
        ("[[targets]]\nport = true", "targets[0].port: must be an integer (got True)"),
        ('[[targets]]\nport = "6443"', 'targets[0].port: must be an integer (got "6443")'),
        ('[[targets]]\nhost = "a b"', "targets[0].host: must be an IP address or a host name"),
        ('[[targets]]\nname = "a b"', "targets[0].name: must be 1-63 letters"),
        ('[[targets]]\nname = ""', "targets[0].name: must be 1-63 letters"),
        ('[[targets]]\nlifetime = "1y"', 'targets[0].lifetime: must be "auto" or a duration'),
        (
            '[[targets]]\ntimeout = "10m"',
            'targets[0].timeout: must be between 1s and 5m (got "10m")',
        ),
        ("[restart]\nenabled = 1", "restart.enabled: must be true or false (got 1)"),
        ('[restart]\nmethod = "kill"', 'restart.method: must be one of "systemd", "static-pod"'),
        ('[restart]\nmethod = "command"', 'restart.command: is required when method = "command"'),
        (
            '[restart]\ncommand = ["restart-it"]',
            "restart.command: must start with an absolute path",
        ),
        ('[restart]\npre_hook = "/bin/true"', "restart.pre_hook: must be a list of strings"),
        ('[restart]\nmin_interval = "5m"', "restart.min_interval: must be between 1h and 365d"),
        ('[restart]\nready_timeout = "1s"', "restart.ready_timeout: must be between 10s and 1h"),
        ('[restart]\nwhen_expired = "never"', 'restart.when_expired: must be one of "immediately"'),
        (
            '[restart]\npeers = ["http://10.0.0.2:6443"]',
            "restart.peers: 'http://10.0.0.2:6443' is not",
        ),
        (
            '[[targets]]\nname = "a"\nport = 6443\n[restart]\ntargets = ["nope"]',
            "restart.targets: names no configured target 'nope'",
        ),
        (
            '[restart]\nenabled = true\nwhen_expired = "window"',
            "restart.windows: is empty: with enabled = true at least one",
        ),
        (
            # Issue 8.8: without a window it would restart only after expiry.
            '[restart]\nenabled = true\nwhen_expired = "immediately"',
            "restart.windows: is empty: with enabled = true at least one",
        ),
        (
            '[[restart.windows]]\ndays = ["sat"]\nstart = "02:00"\nend = "02:00"',
            "restart.windows[0].end: '02:00' equals start",
        ),
        (
            '[restart]\nbefore_expiry = "14d"',
            "restart.before_expiry: must be longer than thresholds.critical (14d)",
        ),
        (
            '[thresholds]\ncritical = "20d"\n[restart]\nbefore_expiry = "15d"',
            "restart.before_expiry: must be longer than thresholds.critical (20d): a restart "
            'due only after CRITICAL would come too late to prevent the alarm (got "15d")',
        ),
        ("[restart]\nwindow = 1", "restart.window: unknown key (did you mean 'windows'?)"),
        (
            '[[restart.windows]]\nstart = "02:00"\nend = "03:00"',
            "restart.windows[0].days: is required",
        ),
        (
            '[[restart.windows]]\ndays = ["sat"]\nstart = "2am"\nend = "03:00"',
            "restart.windows[0].start: ",
        ),
        (
            '[[restart.windows]]\ndays = ["caturday"]\nstart = "02:00"\nend = "03:00"',
            "restart.windows[0].days: ",
        ),
        (
            '[[restart.windows]]\ndays = ["sat"]\nstart = "02:00"\nend = "03:00"\n'
            'timezone = "Mars/Olympus"',
            "restart.windows[0].timezone: ",
        ),
        (
            '[restart.lease]\nkubeconfig = "admin.conf"',
            "restart.lease.kubeconfig: must be an absolute",
        ),
        ('[restart.lease]\nduration = "0s"', "restart.lease.duration: must be between 1s and 1d"),
        ('[restart.lease]\nduration = "999999999d"', "restart.lease.duration: must be between 1s"),
        ("[restart.lease]\nholder = 1", "restart.lease.holder: unknown key"),
        ("[[targets]]\nserver_name = 1", "targets[0].server_name: must be a string (got 1)"),
        ("[[targets]]\nsecure_port = 1", "targets[0].secure_port: unknown key"),
        (
            '[[targets]]\nname = "a"\n[[targets]]\nname = "a"',
            'targets[1].name: duplicates targets[0].name; names must be unique (got "a")',
        ),
        ("interval = ", "/etc/klg.toml: not valid TOML: "),
    ],
)
def test_each_problem_names_file_key_and_value(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
    assert all(p.startswith("/etc/klg.toml") for p in found)


def test_every_problem_is_reported_together() -> None:
    found = problems(
        'interval = "x"\nbogus = 1\n[thresholds]\nwarning = "1d"\n'
        '[[targets]]\nport = -1\n[[targets]]\nhost = "!"\n'
    )
    keys = [p.split(": ")[1] for p in found]
    assert keys == [
        "interval",
        "bogus",
        "thresholds.critical",
        "targets[0].port",
        "targets[1].host",
        "targets[1].name",
    ]


def test_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("agent.config.loader.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    assert load_config(None) == default_config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=f"{path}: no such file"):
        load_config(str(path))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot read"):
        load_config(str(tmp_path))  # a directory


NOBODY = 65534


def _load_as_nobody(path: Path) -> str:
    """Load the config in a child that has dropped root for uid/gid 65534 (as
    root, which CI is, the file mode alone would stop nothing); return
    "ok" or the ConfigError's problems, as the child saw them."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            try:
                load_config(str(path))
                outcome = "ok"
            except ConfigError as error:
                outcome = "; ".join(error.problems)
            os.write(write_end, outcome.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return outcome


def test_permission_denied() -> None:
    # /tmp itself, not pytest's tmp_path: its parents are 0700 and would stop
    # the unprivileged child before the file mode is ever asked.
    directory = Path(tempfile.mkdtemp(prefix="klg-permission-"))
    try:
        directory.chmod(0o755)
        path = directory / "c.toml"
        path.write_text('interval = "5m"\n')
        path.chmod(0o644)
        assert _load_as_nobody(path) == "ok"  # the same file, readable: it is the mode
        path.chmod(0)
        assert _load_as_nobody(path) == f"{path}: cannot read: Permission denied"
    finally:
        shutil.rmtree(directory)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'interval = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[thresholds]\nwarning = "30d"\ncritical = "7d"\n')
    config = load_config(str(path))
    assert config.path == str(path)
    assert config.thresholds.critical == timedelta(days=7)


def test_restart_targets_may_name_discovered_apiservers() -> None:
    # With the default target standing for every apiserver, names such as
    # "k3s" exist only at check time: they cannot be refused here.
    config = parse_config('[restart]\ntargets = ["k3s", "tenant-a"]', "/etc/klg.toml")
    assert config.restart.targets == ("k3s", "tenant-a")
    assert config.targets[0].discovers_all


def test_kind_and_aggregated() -> None:
    config = parse_config(
        '[[targets]]\nname = "edge"\nkind = "k3s"\naggregated = ["metrics-server"]\n',
        "/etc/klg.toml",
    )
    (edge,) = config.targets
    assert (edge.kind, edge.aggregated, edge.discovers_all) == ("k3s", ("metrics-server",), False)
    assert problems('[[targets]]\nkind = "rke3"') == [
        '/etc/klg.toml: targets[0].kind: must be one of "auto", "kubeadm", "k3s", "microk8s", '
        '"k0s", "openshift", "aggregated", "pod" (got "rke3")'
    ]


def test_a_window_reports_all_its_problems_at_once() -> None:
    found = problems(
        '[[restart.windows]]\ndays = ["caturday"]\nstart = "2am"\nend = "25:00"\n'
        'timezone = "Mars/Olympus"\n'
    )
    for key in ("days", "start", "end", "timezone"):
        assert [p for p in found if f"restart.windows[0].{key}: " in p], (key, found)
