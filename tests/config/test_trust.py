"""A config that makes the agent run things as root must be changeable only by
root (or the agent's user), and so must the programs it names (issue 9.12)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.loader import ConfigError, load_config

RESTARTING = (
    '[restart]\nenabled = true\nmethod = "systemd"\nunit = "kube-apiserver.service"\n'
    '[[restart.windows]]\ndays = ["sun"]\nstart = "02:00"\nend = "04:00"\n'
)


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_restarting_config_others_may_write_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", RESTARTING, 0o666)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: has mode 0666: group or others may write to it")


def test_a_restarting_config_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")
    path = write(tmp_path / "c.toml", RESTARTING, 0o644)
    os.chown(path, 4321, 4321)
    with pytest.raises(ConfigError, match=f"{path}: is owned by uid 4321, not by root"):
        load_config(str(path))


def test_a_hook_others_may_write_is_refused(tmp_path: Path) -> None:
    hook = write(tmp_path / "hook", "#!/bin/sh\nexit 0\n", 0o777)
    path = write(tmp_path / "c.toml", f'[restart]\npre_hook = ["{hook}"]\n', 0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: restart.pre_hook: {hook} has mode 0777")


def test_safe_files_and_monitoring_only_configs_pass(tmp_path: Path) -> None:
    hook = write(tmp_path / "hook", "#!/bin/sh\nexit 0\n", 0o755)
    safe = write(
        tmp_path / "safe.toml", RESTARTING.replace("[[", f'post_hook = ["{hook}"]\n[[', 1), 0o644
    )
    assert load_config(str(safe)).restart.post_hook == (str(hook),)
    # Nothing runs as root from this one: its mode is its owner's business.
    loose = write(tmp_path / "loose.toml", 'interval = "5m"\n', 0o666)
    assert load_config(str(loose)).restart.enabled is False
