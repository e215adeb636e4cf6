"""kill -9 during a restore: whatever the moment, no file under a final name is partial.

The restore runs in a forked child (the interpreter and modules are already loaded) that
reports each chunk it is about to write through a pipe; the parent kills it after a
chosen number of chunks, so the kill points sweep the whole restore on any machine, and
then reads every final name. Files are published in batches after one sync, so the
kill points are swept with the default batch (all files published by finish()) and with
batches of 5 files (kills between a batch's sync and its renames).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from sergas_guard.recovery.restore_target import BATCH_FILES, TEMP_PREFIX, RestoreTarget

FILES = 12
CHUNK = 64 * 1024
CHUNKS = 24


def content_chunks(index: int, progress: int | None = None) -> Iterator[bytes]:
    for n in range(CHUNKS):
        if progress is not None:
            os.write(progress, b".")
        yield bytes([index % 251, n % 251]) * (CHUNK // 2)


def expected(index: int) -> bytes:
    return b"".join(content_chunks(index))


def restore(root: Path, progress: int | None = None, batch_files: int = BATCH_FILES) -> None:
    target = RestoreTarget(root, overwrite=True, batch_files=batch_files)
    for index in range(FILES):
        chunks = content_chunks(index, progress)
        target.file(f"d{index % 3}/f{index}", chunks, mode=0o644, mtime_ns=0)
        target.symlink(f"d{index % 3}/l{index}", f"f{index}")
    for d in range(3):
        target.directory(f"d{d}", mode=0o555, mtime_ns=0)
    target.finish()


def restore_in_child_killed_after(root: Path, chunks: int, batch_files: int) -> None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - killed or exits without running pytest teardown
        status = 1
        try:
            os.close(reader)
            restore(root, writer, batch_files)
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        seen = 0
        while seen < chunks and (got := pipe.read(chunks - seen)):
            seen += len(got)
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


TOTAL = FILES * CHUNKS


# Before anything, inside the first file, at file boundaries, mid-way, in the last
# file, and after the last chunk (symlinks and directory modes being applied).
@pytest.mark.parametrize("chunks", [0, 1, 7, CHUNKS, CHUNKS + 1, TOTAL // 2 + 3, TOTAL - 1, TOTAL])
@pytest.mark.parametrize("batch_files", [BATCH_FILES, 5])
def test_a_killed_restore_leaves_only_complete_files_and_temps(
    tmp_path: Path, chunks: int, batch_files: int
) -> None:
    root = tmp_path / "target"
    restore_in_child_killed_after(root, chunks, batch_files)
    finals = 0
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(TEMP_PREFIX) or path.is_symlink():
                continue
            index = int(name.removeprefix("f"))
            assert path.read_bytes() == expected(index), path
            finals += 1
    # A second restore over the leftovers completes the job.
    restore(root)
    for index in range(FILES):
        path = root / f"d{index % 3}" / f"f{index}"
        assert path.read_bytes() == expected(index)
        assert os.readlink(root / f"d{index % 3}" / f"l{index}") == f"f{index}"
    assert finals <= FILES
