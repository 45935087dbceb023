"""The monitoring examples in examples/ call options the `check` verb has."""

from __future__ import annotations

import re
from pathlib import Path

from agent.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def check_options() -> set:
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb")
    check = verbs.choices["check"]  # type: ignore[index]
    return {name for action in check._actions for name in action.option_strings}


def test_icinga2_checkcommand_uses_real_options() -> None:
    text = (ROOT / "examples/icinga2/kube-loopback-guard.conf").read_text()
    assert 'command = [ "/usr/bin/kube-loopback-guard", "check" ]' in text
    used = set(re.findall(r'^\s+"(--[a-z-]+)" = \{', text, re.M))
    assert used == {"--config", "--target"}
    assert used <= check_options()
    assert "apply Service" in text and 'check_command = "kube-loopback-guard"' in text


def test_nrpe_command_is_the_check_verb() -> None:
    text = (ROOT / "examples/nagios/kube-loopback-guard.cfg").read_text()
    assert "command[check_kube_loopback]=/usr/bin/kube-loopback-guard check\n" in text
    assert "define service {" in text and "check_kube_loopback_nrpe" in text
