"""Replace a file so that a reader sees the old contents or the new, never a mix.

node_exporter's textfile collector and the `status` verb read our files at any
moment; the daemon may be killed at any moment. Writing in place could show a
reader (or the next start) half a file, so every write goes to a temporary file
in the same directory and is renamed over the target: rename(2) within one
filesystem is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import os

# Filesystems that cannot fsync a directory say so with one of these; the
# rename has happened and there is nothing more we can do to make it durable.
_DIRECTORY_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP)


def temp_name(path: str) -> str:
    """Given a target path, return a fresh temporary path next to it.

    Hidden and ending in `.tmp`, so neither node_exporter (which reads only
    `*.prom`) nor a person listing the directory mistakes it for the real file;
    the PID and 64 random bits make a clash with another writer practically
    impossible, and O_EXCL turns the rest into an error instead of a clobber.
    """
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(8).hex()}.tmp")


def write_atomic(path: str, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Given a path, bytes, a file mode and whether to fsync, replace the file at
    path with exactly those bytes and that mode, atomically.

    With fsync, the data and the rename are on disk when this returns. Without,
    readers still never see a partial file, but a power cut may lose the write.
    A symlink at path is replaced by the file, not followed.
    Raise OSError if any step fails; the temporary file is removed first.
    """
    temp = temp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, mode)
    try:
        try:
            # The umask may have narrowed the mode at creation; the caller's mode
            # is a promise to readers (the state file must be readable without root).
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        # Also on KeyboardInterrupt/SystemExit: a stray temp file is litter
        # that nothing would ever clean up.
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if fsync:
        _fsync_directory(os.path.dirname(path) or ".")


def _fsync_directory(directory: str) -> None:
    """Given a directory, flush its entries (our rename) to disk.

    Raise OSError if the directory cannot be opened or synced, unless the
    filesystem does not support syncing directories at all.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIRECTORY_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)
