"""tests/debian_mirror.py finds the host's Debian mirror in apt's sources
(fixtures in a tmp dir; the host names are made up), and the repository
names no mirror host of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from debian_mirror import host_mirror

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "debian_mirror.py"


def apt_dir(tmp_path: Path, sources_list: str = "", **parts: str) -> str:
    """An apt configuration directory: sources.list, and sources.list.d files by name."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (tmp_path / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return str(tmp_path)


DEB822 = """\
Types: deb
# a comment
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example.invalid/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_deb822_skips_security_and_takes_the_archive(tmp_path: Path) -> None:
    assert host_mirror(apt_dir(tmp_path, debian_sources=DEB822)) == (
        "http://mirror.example.invalid/debian"
    )


def test_one_line_sources_with_options_and_third_party_repos(tmp_path: Path) -> None:
    sources = (
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb https://vendor.example.invalid/apt cloud-sdk-bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://proxy.example.invalid:3142/debian bookworm main\n"
    )
    assert host_mirror(apt_dir(tmp_path, sources)) == "http://proxy.example.invalid:3142/debian"


def test_sources_list_d_before_sources_list_and_disabled_stanzas_skipped(tmp_path: Path) -> None:
    disabled = DEB822.replace("Components: main\n", "Components: main\nEnabled: no\n")
    directory = apt_dir(
        tmp_path,
        "deb http://fallback.example.invalid/debian stable main\n",
        a_sources=disabled,
        vendor_list="deb http://vendor.example.invalid/apt nodistro main\n",
        **{"ignored.sources.disabled-by-admin": DEB822},  # not *.sources or *.list: apt ignores it
    )
    assert host_mirror(directory) == "http://fallback.example.invalid/debian"


def test_none_found_says_what_to_set(tmp_path: Path) -> None:
    env = {**os.environ, "KLG_APT_DIR": apt_dir(tmp_path)}
    env.pop("KLG_DEBIAN_MIRROR", None)
    result = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 1
    assert "set KLG_DEBIAN_MIRROR=" in result.stderr
    env["KLG_DEBIAN_MIRROR"] = "http://override.example.invalid/debian"
    chosen = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, env=env, timeout=30
    )
    assert chosen.stdout == "http://override.example.invalid/debian\n"


# Not the repository's: a virtualenv, git's store, build output, caches.
_NOT_OURS = {".venv", ".git", "dist", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def test_the_repository_names_no_debian_mirror_host() -> None:
    # A URL of a Debian archive: host, then /debian or /debian-security.
    archive = re.compile(r"https?://(?!\S*\.invalid\b)[\w.-]+(:\d+)?/debian(-security)?\b")
    scanned = 0
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [d for d in subdirectories if d not in _NOT_OURS]
        for name in files:
            path = Path(directory, name)
            if path.suffix in (".gpg", ".deb", ".rpm", ".pyc"):
                continue
            text = path.read_text(errors="replace")
            scanned += 1
            found = archive.search(text)
            assert found is None, f"{path.relative_to(ROOT)}: {found.group(0)}"
    assert scanned > 50  # the walk saw the repository
