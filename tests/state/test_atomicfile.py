"""write_atomic: the whole new file or the old one, with the promised mode, no litter."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import mode_of

from agent.state.atomicfile import temp_name, write_atomic


def test_writes_exact_bytes_with_mode_despite_umask(tmp_path: Path, strict_umask: None) -> None:
    target = tmp_path / "state.json"
    write_atomic(str(target), b"\x00first\nbytes\xff")
    assert target.read_bytes() == b"\x00first\nbytes\xff"
    assert mode_of(target) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_replaces_existing_file_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "metrics.prom"
    target.write_bytes(b"old contents, longer than the new ones\n")
    target.chmod(0o600)
    write_atomic(str(target), b"new\n", mode=0o640, fsync=False)
    assert target.read_bytes() == b"new\n"
    assert mode_of(target) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["metrics.prom"]


def test_empty_and_large_contents(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(str(target), b"")
    assert target.read_bytes() == b""
    big = os.urandom(3 * 1024 * 1024 + 17)
    write_atomic(str(target), big)
    assert target.read_bytes() == big


def test_relative_path_in_current_directory(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic("relative.txt", b"here")
    assert (tmp_path / "relative.txt").read_bytes() == b"here"


def test_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"must stay")
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    write_atomic(str(link), b"new")
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"must stay"


def test_temp_name_is_hidden_unique_and_beside_the_target() -> None:
    names = {temp_name("/var/lib/node_exporter/kube_loopback_guard.prom") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        directory, base = os.path.split(name)
        assert directory == "/var/lib/node_exporter"
        assert base.startswith(f".kube_loopback_guard.prom.{os.getpid()}.")
        # node_exporter's textfile collector reads only *.prom.
        assert base.endswith(".tmp")


def test_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "state.json"
    with pytest.raises(FileNotFoundError):
        write_atomic(str(target), b"data")
    assert os.listdir(tmp_path) == []


def test_failed_rename_removes_the_temp_file(tmp_path: Path) -> None:
    # A real failure after the temp file exists and holds the data: rename(2)
    # of a file over a non-empty directory fails with EISDIR, also for root
    # (which a read-only directory would not stop).
    target = tmp_path / "state.json"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):
        write_atomic(str(target), b"data")
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert target.is_dir()


def test_failed_write_removes_the_temp_file_and_keeps_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: a full filesystem cannot be had here without mounting one, so
    # os.write fails the way it would (ENOSPC) after part of the data is written.
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    real_write = os.write
    calls = []

    def failing_write(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError) as raised:
        write_atomic(str(target), b"new contents")
    assert raised.value.errno == errno.ENOSPC
    assert len(calls) == 2  # the short write was continued, then failed
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_interrupt_also_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(tmp_path / "f"), b"data")
    assert os.listdir(tmp_path) == []


def test_directory_fsync_unsupported_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: some filesystems answer fsync on a directory with EINVAL.
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(str(tmp_path / "f"), b"data")
    assert (tmp_path / "f").read_bytes() == b"data"


def test_directory_fsync_io_error_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated EIO: the data may not be durable, and the caller must hear it.
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as raised:
        write_atomic(str(tmp_path / "f"), b"data")
    assert raised.value.errno == errno.EIO


def test_no_fsync_calls_when_not_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise AssertionError("fsync called")

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(str(tmp_path / "f"), b"data", fsync=False)
    assert (tmp_path / "f").read_bytes() == b"data"
