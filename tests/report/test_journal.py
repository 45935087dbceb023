"""Tests for agent.journal, against a real AF_UNIX datagram socket standing in for journald.

The stand-in receives exactly what journald would (datagram payload and any
SCM_RIGHTS file descriptor), and the records are read back by a parser
written here from the protocol document, not by the module's own encoder.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from journald import (
    F_SEAL_GROW,
    F_SEAL_SHRINK,
    F_SEAL_WRITE,
    FakeJournald,
)

from agent.report.journal import (
    DATAGRAM_VALUE_BYTES,
    MAX_VALUE_BYTES,
    SYSLOG_IDENTIFIER,
    Journal,
    open_journal,
    started_by_systemd,
)

MARK = " … [truncated]"


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    server = FakeJournald(tmp_path / "journal.sock")
    yield server
    server.close()


@pytest.fixture
def journal(journald: FakeJournald) -> Iterator[Tuple[Journal, io.StringIO]]:
    stderr = io.StringIO()
    with Journal(stderr, journald.path) as sink:
        yield sink, stderr


# --- the native format -------------------------------------------------------


def test_simple_record_is_exactly_the_native_format(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    sink.send(
        "kube-apiserver: OK",
        6,
        {"MESSAGE_ID": "eb35f3f875174c1898025bddf912aeca", "CERT_SECONDS_LEFT": 3542400},
    )
    received = journald.receive()
    assert not received.via_memfd
    assert received.payload == (
        b"MESSAGE=kube-apiserver: OK\n"
        b"PRIORITY=6\n"
        b"SYSLOG_IDENTIFIER=kube-loopback-guard\n"
        b"MESSAGE_ID=eb35f3f875174c1898025bddf912aeca\n"
        b"CERT_SECONDS_LEFT=3542400\n"
    )
    assert stderr.getvalue() == ""


def test_a_value_with_a_newline_uses_the_binary_form(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    sink.send("first\nsecond", 3, {"PROBE_ERROR": "line one\nline two\n", "TARGET": "a=b"})
    received = journald.receive()
    # MESSAGE stays one line (it may carry a peer's text); other fields keep theirs.
    assert received.payload == (
        b"MESSAGE=first\\nsecond\n"
        b"PRIORITY=3\n"
        b"SYSLOG_IDENTIFIER=kube-loopback-guard\n"
        b"PROBE_ERROR\n" + (18).to_bytes(8, "little") + b"line one\nline two\n\n"
        b"TARGET=a=b\n"
    )
    assert received.fields["PROBE_ERROR"] == "line one\nline two\n"
    assert received.fields["TARGET"] == "a=b"


def test_values_are_utf8_none_is_omitted_and_empty_is_kept(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    sink.send(
        "expires 2027-01-09 — 41.2 days left",
        4,
        {"TARGET": "kube-apiserver", "PROBE_ERROR": None, "CONFIG_FILE": "", "PROCESS_PID": 790992},
    )
    fields = journald.receive().fields
    assert fields == {
        "MESSAGE": "expires 2027-01-09 — 41.2 days left",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "TARGET": "kube-apiserver",
        "CONFIG_FILE": "",
        "PROCESS_PID": "790992",
    }


def test_an_undecodable_file_name_does_not_break_logging(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    name = os.fsdecode(b"/etc/kube-loopback-guard/\xff.toml")  # a lone surrogate
    sink.send(f"cannot read {name}", 3, {"CONFIG_FILE": name})
    fields = journald.receive().fields
    assert fields["CONFIG_FILE"] == "/etc/kube-loopback-guard/\\udcff.toml"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "target",
        "Target",
        "_PID",
        "1ST",
        "A" * 65,
        "CERT-SHA256",
        "TÄRGET",
        "WITH SPACE",
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "KLG_TRUNCATED",
        1,
    ],
)
def test_a_bad_field_name_is_a_programming_error(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO], name: object
) -> None:
    sink, stderr = journal
    with pytest.raises(ValueError, match="field"):
        sink.send("x", 6, {name: "v"})  # type: ignore[dict-item]
    assert not journald.pending()
    assert stderr.getvalue() == ""


@pytest.mark.parametrize("name", ["A" * 64, "A", "CERT_NOT_AFTER", "X509_2", "A__"])
def test_good_field_names_pass(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO], name: str
) -> None:
    journal[0].send("x", 6, {name: "v"})
    assert journald.receive().fields[name] == "v"


@pytest.mark.parametrize("priority", [-1, 8, "6", 6.0])
def test_a_bad_priority_is_a_programming_error(
    journal: Tuple[Journal, io.StringIO], priority: object
) -> None:
    with pytest.raises(ValueError, match="priority"):
        journal[0].send("x", priority, {})  # type: ignore[arg-type]


# --- big records ---------------------------------------------------------------


def _too_big_for_a_datagram(size: int) -> None:
    """Skip unless a fresh AF_UNIX datagram socket (as Journal's) refuses a
    datagram of `size` bytes with EMSGSIZE, which is what the test relies on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.setblocking(False)
        try:
            probe.sendto(b"x" * size, "\0klg-test-nobody-listens")
        except OSError as error:
            if error.errno == errno.EMSGSIZE:
                return
        sndbuf = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    pytest.skip(f"this host's default send buffer ({sndbuf} bytes) takes {size} bytes")


def test_a_record_too_big_for_a_datagram_arrives_whole_in_a_sealed_memfd(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    # The newline reaches journald escaped (MESSAGE stays one line): 2 bytes.
    message = ("0123456789abcdef" * (MAX_VALUE_BYTES // 16))[:-3] + "\nE"
    assert len(message.encode()) + 1 == MAX_VALUE_BYTES
    _too_big_for_a_datagram(len(message))
    sink.send(message, 4, {"TARGET": "kube-apiserver"})
    received = journald.receive()
    assert received.via_memfd
    # journald refuses an unsealed memfd from a non-root sender.
    assert received.seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == (
        F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
    )
    fields = received.fields
    assert fields["MESSAGE"] == message.replace("\n", "\\n")
    assert fields["TARGET"] == "kube-apiserver"
    assert "KLG_TRUNCATED" not in fields
    assert stderr.getvalue() == ""


def test_a_value_over_the_cap_is_cut_and_says_so(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    # Two-byte characters after one ASCII one, so the cut falls inside a
    # character and must drop its first byte.
    message = "x" + "é" * (MAX_VALUE_BYTES // 2)
    sink.send(message, 4, {"TARGET": "kube-apiserver"})
    received = journald.receive()
    cut = received.fields["MESSAGE"]
    assert cut.endswith(MARK)
    assert len(cut.encode()) <= MAX_VALUE_BYTES
    assert len(cut.encode()) > MAX_VALUE_BYTES - 16
    assert cut[0] == "x"
    assert set(cut[1 : -len(MARK)]) == {"é"}
    assert received.fields["KLG_TRUNCATED"] == "1"
    assert received.fields["TARGET"] == "kube-apiserver"


def _no_memfd(name: str, flags: int = 0) -> int:
    raise OSError(errno.ENOSYS, "Function not implemented")


@pytest.mark.parametrize("how", ["no os.memfd_create", "ENOSYS"])
def test_without_memfd_a_big_record_is_cut_to_one_datagram(
    journald: FakeJournald,
    journal: Tuple[Journal, io.StringIO],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    # Simulates an old kernel (memfd_create came in Linux 3.17) or a Python
    # built without it.
    if how == "ENOSYS":
        monkeypatch.setattr(os, "memfd_create", _no_memfd)
    else:
        monkeypatch.delattr(os, "memfd_create")
    sink, stderr = journal
    message = "m" * (1024 * 1024)
    _too_big_for_a_datagram(len(message))
    sink.send(message, 2, {"TARGET": "kube-apiserver", "PROBE_ERROR": "e" * 100_000})
    received = journald.receive()
    assert not received.via_memfd
    fields = received.fields
    assert fields["MESSAGE"].endswith(MARK)
    assert fields["MESSAGE"].startswith("m" * 1000)
    assert len(fields["MESSAGE"].encode()) == DATAGRAM_VALUE_BYTES
    assert fields["PROBE_ERROR"].endswith(MARK)
    assert fields["TARGET"] == "kube-apiserver"
    assert fields["PRIORITY"] == "2"
    assert fields["KLG_TRUNCATED"] == "1"
    assert stderr.getvalue() == ""


# --- journald unreachable --------------------------------------------------------


def test_journald_gone_sends_records_to_stderr_with_one_complaint_per_outage(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    sink.send("before", 6, {})
    assert journald.receive().fields["MESSAGE"] == "before"

    journald.close()  # the socket file disappears
    sink.send("during one", 4, {"TARGET": "kube-apiserver"})
    sink.send("during two", 2, {"TARGET": "kube-apiserver"})
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 3
    assert "cannot send to the journal at " + journald.path in lines[0]
    assert lines[1:] == [
        "WARNING during one TARGET=kube-apiserver",
        "CRIT during two TARGET=kube-apiserver",
    ]

    back = FakeJournald(Path(journald.path))  # journald restarted
    try:
        sink.send("after", 6, {})
        assert back.receive().fields["MESSAGE"] == "after"
        assert len(stderr.getvalue().splitlines()) == 3
    finally:
        back.close()

    sink.send("gone again", 6, {})
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 5
    assert "cannot send to the journal" in lines[3]
    assert lines[4] == "INFO gone again"


def test_journald_not_listening_sends_records_to_stderr(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    journald.sock.close()  # the file stays: ECONNREFUSED
    sink.send("refused", 3, {})
    lines = stderr.getvalue().splitlines()
    assert "Connection refused" in lines[0]
    assert lines[1:] == ["ERR refused"]


def test_a_big_record_to_a_gone_journald_goes_to_stderr(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    journald.close()
    message = "b" * (512 * 1024)
    sink.send(message, 4, {})
    lines = stderr.getvalue().splitlines()
    assert lines[1] == "WARNING " + message


def test_a_full_journald_queue_never_blocks_and_loses_nothing(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, stderr = journal
    sent = 0
    # Nobody reads: the receive queue (net.unix.max_dgram_qlen) or the send
    # buffer fills, and sendto says EAGAIN instead of blocking.
    while not stderr.getvalue():
        sink.send(f"record {sent}", 6, {"SEQ": sent})
        sent += 1
        assert sent < 100_000, "the queue never filled"
    sink.send(f"record {sent}", 6, {"SEQ": sent})
    sent += 1
    on_stderr = [line for line in stderr.getvalue().splitlines() if line.startswith("INFO ")]
    assert len(on_stderr) >= 2
    assert journald.drain() + len(on_stderr) == sent


class _FailingStderr(io.StringIO):
    """A stderr that keeps every line offered to it, then fails like a closed
    file (ValueError) or a reader gone away (BrokenPipeError)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.offered: List[str] = []
        self.error = error

    def write(self, text: str) -> int:
        self.offered.append(text)
        raise self.error


@pytest.mark.parametrize(
    "error", [ValueError("I/O operation on closed file"), BrokenPipeError(errno.EPIPE, "pipe")]
)
def test_a_failing_stderr_is_offered_each_record_once_and_never_raises(
    journald: FakeJournald, error: Exception
) -> None:
    stderr = _FailingStderr(error)
    journald.close()  # journald gone: records fall back to the failing stderr
    with Journal(stderr, journald.path) as sink:
        sink.send("nowhere to go", 2, {"TARGET": "x"})
        sink.send("still nowhere", 3, {})
    complaint, first, second = stderr.offered
    assert complaint.startswith("WARNING kube-loopback-guard: cannot send to the journal at ")
    assert first == "CRIT nowhere to go TARGET=x\n"
    assert second == "ERR still nowhere\n"
    # Without journald at all, straight to the (failing) stderr, once.
    plain = _FailingStderr(error)
    Journal(plain).send("nowhere to go", 2, {"TARGET": "x"})
    assert plain.offered == ["CRIT nowhere to go TARGET=x\n"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_grows_over_many_records(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    sink.send("warm up", 6, {})
    journald.receive()
    before = _open_fds()
    for n in range(200):
        sink.send(f"record {n}", 6, {})
        journald.receive()
    sink.send("m" * 300_000, 6, {})  # memfd path
    journald.receive()
    assert _open_fds() == before


def test_close_then_send_opens_a_new_socket(
    journald: FakeJournald, journal: Tuple[Journal, io.StringIO]
) -> None:
    sink, _ = journal
    sink.send("one", 6, {})
    sink.close()
    sink.close()
    sink.send("two", 6, {})
    assert [journald.receive().fields["MESSAGE"] for _ in range(2)] == ["one", "two"]


# --- stderr and the choice of sink ------------------------------------------------


def test_stderr_is_one_readable_line_per_record() -> None:
    stderr = io.StringIO()
    sink = Journal(stderr)
    sink.send(
        "kube-apiserver: OK -> WARNING: expires\nsoon",
        4,
        {
            "MESSAGE_ID": "eb35f3f875174c1898025bddf912aeca",
            "TARGET": "kube-apiserver",
            "PROBE_ERROR": None,
            "SUMMARY": 'says "hi"\tthere',
            "CONFIG_FILE": "",
            "PATH": "C:\\x",
        },
    )
    sink.send("second", 6, {})
    assert stderr.getvalue().splitlines() == [
        "WARNING kube-apiserver: OK -> WARNING: expires\\nsoon"
        " MESSAGE_ID=eb35f3f875174c1898025bddf912aeca TARGET=kube-apiserver"
        ' SUMMARY="says \\"hi\\"\\tthere" CONFIG_FILE="" PATH="C:\\\\x"',
        "INFO second",
    ]


def test_open_journal_without_a_socket_writes_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = open_journal(socket_path=str(tmp_path / "none"), environ={})
    assert sink.socket_path is None
    sink.send("no journald here", 5, {"TARGET": "kube-apiserver"})
    captured = capsys.readouterr()
    assert captured.err == "NOTICE no journald here TARGET=kube-apiserver\n"
    assert captured.out == ""


def test_open_journal_ignores_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert open_journal(io.StringIO(), str(tmp_path / "file"), {}).socket_path is None


def test_open_journal_prefers_the_native_socket(journald: FakeJournald, tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        sink = open_journal(stream, journald.path, environ)
        sink.send("native", 6, {})
        sink.close()
    assert sink.socket_path == journald.path
    assert journald.receive().fields["MESSAGE"] == "native"
    assert (tmp_path / "stderr").read_text() == ""


def test_stderr_connected_to_journald_gets_priority_prefixes(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        sink = open_journal(stream, str(tmp_path / "none"), environ)
        sink.send("through the stream", 3, {"TARGET": "kube-apiserver"})
    assert sink.stream_is_journal
    # sd-daemon(3) prefixes: journald stores them as PRIORITY.
    assert (tmp_path / "stderr").read_text() == "<3>through the stream TARGET=kube-apiserver\n"


@pytest.mark.parametrize("value", ["", "1:2", "garbage", "1:2:3"])
def test_a_journal_stream_of_another_file_is_not_ours(tmp_path: Path, value: str) -> None:
    stream = io.StringIO()
    sink = open_journal(stream, str(tmp_path / "none"), {"JOURNAL_STREAM": value})
    sink.send("plain", 6, {})
    assert not sink.stream_is_journal
    assert stream.getvalue() == "INFO plain\n"


def test_open_journal_defaults_to_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    sink = open_journal(socket_path="/nonexistent/journal.sock", environ={})
    assert sink.stream is stream


def test_started_by_systemd_when_stderr_is_its_stream_or_invocation_without_a_tty(
    tmp_path: Path,
) -> None:
    with open(tmp_path / "err", "w") as stream:
        st = os.fstat(stream.fileno())
        own = f"{st.st_dev}:{st.st_ino}"
        assert started_by_systemd(stream, {"JOURNAL_STREAM": own})
        assert started_by_systemd(stream, {"INVOCATION_ID": "ab" * 16})
        assert not started_by_systemd(stream, {})
        assert not started_by_systemd(stream, {"JOURNAL_STREAM": "1:2"})
    primary, secondary = os.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            assert not started_by_systemd(terminal, {"INVOCATION_ID": "ab" * 16})
    finally:
        os.close(primary)
        os.close(secondary)


def test_echo_writes_each_record_once_to_stderr_as_well(journald: FakeJournald) -> None:
    stderr = io.StringIO()
    with Journal(stderr, journald.path, echo=True) as sink:
        sink.send("kube-apiserver: OK", 6, {"TARGET": "api"})
    assert journald.receive().fields["MESSAGE"] == "kube-apiserver: OK"
    assert stderr.getvalue() == "INFO kube-apiserver: OK TARGET=api\n"
