"""agent.usage in-process; the CLI's exits are driven end to end in test_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from agent.usage import join_negative_values, terminal_columns

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("argv", "joined"),
    [
        (["demo", "--expires-in", "-3d"], ["demo", "--expires-in=-3d"]),
        (["demo", "--lifetime", "-1d", "--json"], ["demo", "--lifetime=-1d", "--json"]),
        (["demo", "--expires-in", "30d"], ["demo", "--expires-in", "30d"]),
        # Not a value: an option after it stays an option (argparse then complains).
        (["demo", "--expires-in", "--json"], ["demo", "--expires-in", "--json"]),
        (["demo", "--expires-in"], ["demo", "--expires-in"]),
        (["check", "--target", "-3d"], ["check", "--target", "-3d"]),
    ],
)
def test_join_negative_values(argv: list, joined: list) -> None:
    assert join_negative_values(argv) == joined


@pytest.mark.parametrize("columns", ["120", "40", "0", "-5", "wide", None])
def test_terminal_columns_as_shutil_reads_them(
    columns: Optional[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


def test_building_a_parser_imports_no_shutil() -> None:
    # argparse's own formatter imports shutil (and zlib, bz2, lzma) for the width.
    code = (
        "import sys; from agent.cli import build_parser; "
        "build_parser('check').format_help(); print(sorted({'shutil', 'lzma'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "[]", done.stderr
