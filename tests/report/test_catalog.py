"""Tests for systemd/kube-loopback-guard.catalog, the text `journalctl -x` shows.

The catalog is parsed here by the rules of systemd's own parser (catalog.c),
checked against agent/events.py, and, where journalctl is installed, compiled
by systemd itself into a catalog database under a temporary root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

from agent.report.events import MESSAGE_IDS, EventKind

CATALOG = Path(__file__).resolve().parents[2] / "systemd" / "kube-loopback-guard.catalog"

# Fields the agent sets on its records (agent/events.py target_fields and the
# daemon's config records); a substitution naming anything else is a typo.
RECORD_FIELDS = {
    "TARGET",
    "STATE",
    "PREVIOUS_STATE",
    "SOURCE",
    "CERT_NOT_AFTER",
    "CERT_NOT_BEFORE",
    "CERT_SECONDS_LEFT",
    "CERT_SHA256",
    "PROCESS_PID",
    "PROCESS_START",
    "PROBE_ERROR",
    "PROBE_ENDPOINT",
    "LIVEZ",
    "CONFIG_FILE",
    # restart records (agent/restart.py, agent/daemon.py)
    "RESTART_AT",
    "RESTART_REASON",
    "RESTART_METHOD",
    "RESTART_OUTCOME",
    "NEW_CERT_NOT_AFTER",
}

HAND_CHECK = (
    "curl --resolve apiserver-loopback-client:6443:127.0.0.1 -k -v"
    " https://apiserver-loopback-client:6443/healthz"
)


@dataclass
class Entry:
    message_id: str
    headers: Dict[str, str]
    body: str
    text: str  # everything after the `-- ID` line, as journalctl stores it


def parse_catalog(text: str) -> List[Entry]:
    """Given a catalog file's text, return its entries in order.

    As systemd's parser: lines starting with "#" or ";" are comments wherever
    they are, and `-- <32 hex>` starts an entry only after an empty line.
    """
    chunks: List[List[str]] = []
    ids: List[str] = []
    after_empty = True
    for line in text.splitlines():
        if line[:1] in ("#", ";"):
            continue
        header = re.fullmatch(r"-- ([0-9a-f]{32})", line)
        if after_empty and header:
            ids.append(header.group(1))
            chunks.append([])
        elif line.strip():
            assert chunks, f"text outside an entry: {line!r}"
            chunks[-1].append(line)
        elif chunks:
            chunks[-1].append(line)
        after_empty = not line.strip()
    entries = []
    for message_id, lines in zip(ids, chunks):
        blank = lines.index("") if "" in lines else len(lines)
        headers = dict(line.split(": ", 1) for line in lines[:blank])
        body = "\n".join(lines[blank:]).strip()
        entries.append(Entry(message_id, headers, body, "\n".join(lines).strip()))
    return entries


@pytest.fixture(scope="module")
def entries() -> List[Entry]:
    return parse_catalog(CATALOG.read_text(encoding="utf-8"))


def test_one_entry_per_message_id(entries: List[Entry]) -> None:
    ids = [entry.message_id for entry in entries]
    assert len(ids) == len(set(ids)), "a MESSAGE_ID has two entries"
    assert set(ids) == set(MESSAGE_IDS.values())
    assert set(MESSAGE_IDS) == set(EventKind), "an event kind has no MESSAGE_ID"


def test_every_entry_has_subject_defined_by_support_and_a_body(entries: List[Entry]) -> None:
    for entry in entries:
        assert entry.headers.get("Subject"), entry.message_id
        assert entry.headers.get("Defined-By") == "kube-loopback-guard", entry.message_id
        assert entry.headers.get("Support"), entry.message_id
        assert len(entry.body) > 100, entry.message_id


def test_comments_only_before_the_first_entry() -> None:
    # systemd's parser drops a "#" or ";" line anywhere, so such a line inside
    # an entry would silently vanish from the text.
    lines = CATALOG.read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("-- "))
    assert [line for line in lines[first:] if line[:1] in ("#", ";")] == []


def test_substitutions_name_fields_the_agent_sets(entries: List[Entry]) -> None:
    for entry in entries:
        names = re.findall(r"@([A-Z0-9_]+)@", entry.text)
        assert set(names) <= RECORD_FIELDS, entry.message_id
        # journalctl substitutes only [A-Z_]+: a digit leaves @NAME@ as is.
        assert all(re.fullmatch(r"[A-Z_]+", name) for name in names), entry.message_id


def test_target_entries_tell_how_to_check_by_hand(entries: List[Entry]) -> None:
    by_id = {entry.message_id: entry for entry in entries}
    for kind in (EventKind.STATE_CHANGED, EventKind.REMINDER, EventKind.PROBE_FAILED):
        assert HAND_CHECK in by_id[MESSAGE_IDS[kind]].body, kind
    for kind in (EventKind.STATE_CHANGED, EventKind.REMINDER):
        body = " ".join(by_id[MESSAGE_IDS[kind]].body.split())  # as read, not as wrapped
        assert "x509: certificate has expired" in body, kind
        assert "one control-plane node at a time" in body, kind
    assert "kube-loopback-guard config\n" in by_id[MESSAGE_IDS[EventKind.CONFIG_REJECTED]].body


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="journalctl is not installed")
def test_systemd_compiles_the_catalog(tmp_path: Path, entries: List[Entry]) -> None:
    catalog_dir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir)

    def journalctl(*args: str) -> str:
        done = subprocess.run(
            ["journalctl", "--root", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        # journalctl logs a file it cannot import and still exits 0.
        assert done.stderr == "", done.stderr
        return done.stdout

    journalctl("--update-catalog")
    assert (tmp_path / "var" / "lib" / "systemd" / "catalog" / "database").is_file()
    listed = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in journalctl("--list-catalog").splitlines()
    }
    assert set(listed) == set(MESSAGE_IDS.values())
    for entry in entries:
        assert listed[entry.message_id] == "kube-loopback-guard: " + entry.headers["Subject"]
        dumped = journalctl("--dump-catalog", entry.message_id)
        assert dumped.strip() == f"-- {entry.message_id}\n{entry.text}"
