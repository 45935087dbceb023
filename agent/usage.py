"""Command-line errors as an operator's tools read them.

`check` and `demo` are monitoring plugins: every exit prints a status line
first (`KUBE-LOOPBACK-GUARD UNKNOWN - …`, exit 3), be it an invalid config, a
usage error or an unknown --target; Nagios shows "(null)" for an empty stdout
and reads argparse's exit 2 as CRITICAL. The other verbs exit EX_USAGE.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING, List, NoReturn

if TYPE_CHECKING:
    from agent.config.loader import ConfigError

# Light on purpose (the CLI imports it for --help): the rest of the agent is
# imported where an error is actually reported.

# sysexits.h EX_USAGE: a command line that cannot be parsed, or a --target
# that is not configured (argparse's 2 would collide with restart's "failed").
# `check` and `demo` exit EXIT_UNKNOWN instead, as a monitoring plugin must.
EXIT_USAGE = 64
# sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus= names it.
EXIT_CONFIG = 78


class UnknownTarget(Exception):
    """--target names no configured target."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit EXIT_USAGE, or, for the
    plugin verbs (`plugin` set), print the plugin's UNKNOWN line and exit 3."""

    plugin = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil for the terminal's width, which imports
        # shutil (with zlib, bz2 and lzma: ~4 ms of a cold check) each time a
        # parser is built, help printed or not.
        # (typeshed's formatter_class type knows only prog; every argparse
        # formatter takes width too.)
        formatter: argparse.HelpFormatter = self.formatter_class(  # type: ignore[call-arg]
            prog=self.prog, width=terminal_columns() - 2
        )
        return formatter

    def error(self, message: str) -> NoReturn:
        from agent.report.output import EXIT_UNKNOWN, unknown_line

        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if self.plugin:
            sys.stdout.write(unknown_line(f"usage error: {message} (see {self.prog} --help)"))
            sys.exit(EXIT_UNKNOWN)
        sys.exit(EXIT_USAGE)


def terminal_columns() -> int:
    """Return the terminal's width as shutil.get_terminal_size() does: $COLUMNS
    when a positive number, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def plugin_unknown(args: argparse.Namespace, summary: str, details: List[str]) -> int:
    """Print the plugin's UNKNOWN line (or JSON) on stdout, the details on
    stderr; return EXIT_UNKNOWN."""
    import json

    from agent.report.output import EXIT_UNKNOWN, unknown_line

    for line in details:
        print(f"kube-loopback-guard: {line}", file=sys.stderr)
    if getattr(args, "json", False):
        body = {"state": "UNKNOWN", "summary": summary, "problems": details, "targets": []}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write(unknown_line(summary))
    return EXIT_UNKNOWN


def invalid_config_summary(error: ConfigError) -> str:
    count = len(error.problems)
    return (
        f"invalid configuration: {error.problems[0]} "
        f"({count} problem{'s' if count != 1 else ''}, see stderr)"
    )


def unknown_target(error: UnknownTarget) -> int:
    print(f"kube-loopback-guard: {error}", file=sys.stderr)
    return EXIT_USAGE


# Options whose value may be negative ("-3d"): argparse would read it as an option.
_SIGNED_OPTIONS = ("--expires-in", "--lifetime")
_NEGATIVE = re.compile(r"-[0-9]")


def join_negative_values(argv: List[str]) -> List[str]:
    """Given argv, return it with `--expires-in -3d` spelled `--expires-in=-3d`."""
    joined: List[str] = []
    words = iter(argv)
    for word in words:
        if word in _SIGNED_OPTIONS:
            value = next(words, None)
            if value is not None and _NEGATIVE.match(value):
                joined.append(f"{word}={value}")
                continue
            joined.append(word)
            if value is not None:
                joined.append(value)
            continue
        joined.append(word)
    return joined
