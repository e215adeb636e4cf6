"""Durable file writes: a file under its final name is always complete.

Every object the repository stores is written the same way: a temporary file in the
same directory, ``fsync`` of its data, ``os.replace`` onto the final name, ``fsync`` of
the directory. A process killed at any point therefore leaves either the old state or
the new one, plus at worst a temporary file (``.tmp-*``) that garbage collection removes.

:func:`start_writeback` lets a writer of many files start each one's way to the disk as
soon as it is written and ``fsync`` them later, together.
"""

from __future__ import annotations

import ctypes
import functools
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["TEMP_PREFIX", "fsync_dir", "make_dirs", "start_writeback", "write_atomic"]

#: Names starting with this are unfinished writes; nothing else in the repository does.
TEMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a new or removed file) durable.

    Raises OSError when the directory cannot be opened.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# sync_file_range(2)'s flag: start writing the range's dirty pages, without waiting.
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux only; the os module has no binding for it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int, flags: int) -> int:
        return int(func(fd, offset, length, flags))

    return call


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Start writing the dirty pages of ``fd``'s range (``length`` 0: to the end) to
    disk and return without waiting: a later ``fsync`` then mostly finds the data
    written, and one journal commit covers every file started this way (PostgreSQL
    flushes its writes the same way). Durability still needs the ``fsync``.

    A hint: does nothing where ``sync_file_range(2)`` is missing, and never raises.
    """
    func = _sync_file_range()
    if func is not None:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each made durable in its parent."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        fsync_dir(path.parent)


def write_atomic(
    path: Path, data: bytes | bytearray | memoryview | Sequence[bytes], *, mode: int = 0o600
) -> None:
    """Write ``data`` (one buffer, or several written one after the other) to ``path``
    so that ``path`` holds either nothing (or its old contents) or all of ``data``, even
    if the process is killed or the machine loses power.

    Raises OSError on I/O failure; the temporary file is removed then.
    """
    parts = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    temp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
