"""Who may write what the agent runs as root, like sshd's StrictModes.

A config that enables restarts or names commands decides what root runs. If
another user may change the file, or a program it names, that user runs code
as root. So such a config must be owned by root or the agent's own user and
not be writable by group or others, and so must every program it names.
"""

from __future__ import annotations

import os
import stat
from typing import List, Tuple

from agent.config.types import Config

__all__ = ["trust_problems"]


def _unsafe(info: os.stat_result) -> str:
    """Given a file's stat, return why others could change it, or ""."""
    mode = stat.S_IMODE(info.st_mode)
    euid = os.geteuid()
    if info.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or uid {euid} (this agent)"
        return f"is owned by uid {info.st_uid}, not by {owners}"
    if mode & 0o022:
        return f"has mode {mode:04o}: group or others may write to it (chmod go-w)"
    return ""


def _programs(config: Config) -> List[Tuple[str, str]]:
    restart = config.restart
    named = [
        ("restart.command", restart.command),
        ("restart.blocking_command", restart.blocking_command),
        ("restart.pre_hook", restart.pre_hook),
        ("restart.post_hook", restart.post_hook),
    ]
    return [(key, argv[0]) for key, argv in named if argv]


def trust_problems(config: Config, path: str, info: os.stat_result) -> List[str]:
    """Given a parsed config, its path and the stat of the file it was read
    from, return one problem per file others could change although the config
    runs it as root (empty when there is nothing to run, or all is safe).

    A program that does not exist is left to the check at run time.
    """
    programs = _programs(config)
    if not config.restart.enabled and not programs:
        return []
    problems = []
    why = _unsafe(info)
    if why:
        problems.append(
            f"{path}: {why}; a config that enables restarts or names commands must be "
            "owned by root (or the agent's user) and writable by its owner only"
        )
    for key, program in programs:
        try:
            program_info = os.stat(program)
        except OSError:
            continue
        why = _unsafe(program_info)
        if why:
            problems.append(f"{path}: {key}: {program} {why}; the agent would run it as root")
    return problems
