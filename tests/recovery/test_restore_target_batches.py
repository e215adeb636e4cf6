"""Batched publication in RestoreTarget: files are renamed into place a batch at a time,
each only after its data was fsynced (by a writer thread for small files).

The ordering that matters for a power loss (data durable before the rename that gives it
a final name) is checked on the real system calls with ``strace``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sergas_guard.errors import ConfigurationError, UnsafeRestoreError
from sergas_guard.recovery.restore_target import TEMP_PREFIX, RestoreTarget

MTIME = 1_600_000_000_123_456_789


def finals(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if not n.startswith(TEMP_PREFIX))


def temps(root: Path) -> list[str]:
    return [n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)]


def test_files_are_published_a_batch_at_a_time(tmp_path: Path) -> None:
    """A complete batch is published in the background, in entry order: at the latest
    when the next batch is complete, never before it is complete itself."""
    root = tmp_path / "t"
    target = RestoreTarget(root, batch_files=3)
    names = [f"f{i}" for i in range(7)]
    for i, name in enumerate(names):
        target.file(name, [name.encode()], mode=0o640, mtime_ns=MTIME)
        # The unpublished ones exist only under temporary names (once their writer ran).
        complete = (i + 1) // 3 * 3
        published = finals(root)
        assert published == names[: len(published)]
        assert max(complete - 3, 0) <= len(published) <= complete
    target.finish()
    assert finals(root) == names
    assert temps(root) == []
    for name in names:
        assert (root / name).read_bytes() == name.encode()
        assert (root / name).stat().st_mtime_ns == MTIME
        assert (root / name).stat().st_mode & 0o777 == 0o640


def test_the_byte_bound_closes_a_batch(tmp_path: Path) -> None:
    root = tmp_path / "t"
    target = RestoreTarget(root, batch_bytes=100)
    target.file("a", [b"x" * 60], mode=0o644, mtime_ns=MTIME)
    assert finals(root) == []
    target.file("b", [b"y" * 30, b"y" * 30], mode=0o644, mtime_ns=MTIME)
    assert finals(root) in ([], ["a"], ["a", "b"])  # complete: being published
    target.file("big", [b"z" * 150], mode=0o644, mtime_ns=MTIME)
    assert finals(root) in (["a", "b"], ["a", "b", "big"])  # a batch of its own
    target.finish()


def test_large_files_streamed_by_the_caller_keep_their_order_with_small_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "t"
    target = RestoreTarget(root)
    big = [b"L" * (700 * 1024)] * 3  # over the 1 MiB a writer thread takes
    target.file("same", [b"small first"], mode=0o644, mtime_ns=MTIME)
    target.file("same", big, mode=0o644, mtime_ns=MTIME)
    target.file("other", big, mode=0o644, mtime_ns=MTIME)
    target.file("other", [b"small last"], mode=0o644, mtime_ns=MTIME)
    target.finish()
    assert (root / "same").read_bytes() == b"".join(big)
    assert (root / "other").read_bytes() == b"small last"
    assert sorted(os.listdir(root)) == ["other", "same"]


def test_abort_removes_the_unpublished_batch_and_keeps_the_published(tmp_path: Path) -> None:
    root = tmp_path / "t"
    target = RestoreTarget(root, batch_files=2)
    for name in ("a", "b", "c"):
        target.file(f"d/{name}", [name.encode()], mode=0o644, mtime_ns=MTIME)
    assert finals(root / "d") in ([], ["a"], ["a", "b"])  # complete: being published
    target.abort()
    assert sorted(os.listdir(root / "d")) == ["a", "b"]
    assert (root / "d" / "b").read_bytes() == b"b"


def test_later_entries_for_a_name_win_within_a_batch(tmp_path: Path) -> None:
    root = tmp_path / "t"
    target = RestoreTarget(root)
    for content in (b"first", b"second", b"third"):
        target.file("same", [content], mode=0o644, mtime_ns=MTIME)
    target.finish()
    assert (root / "same").read_bytes() == b"third"
    assert os.listdir(root) == ["same"]


def test_a_directory_appearing_at_a_pending_name_is_refused_at_publication(
    tmp_path: Path,
) -> None:
    root = tmp_path / "t"
    target = RestoreTarget(root)
    target.file("x", [b"data"], mode=0o644, mtime_ns=MTIME)
    target.file("y", [b"data"], mode=0o644, mtime_ns=MTIME)
    (root / "y").mkdir()  # a racing process, after the entry was checked
    with pytest.raises(UnsafeRestoreError, match="'y' appeared as a directory"):
        target.finish()
    assert temps(root) == []
    assert (root / "y").is_dir()
    assert (root / "x").read_bytes() == b"data"


@pytest.mark.parametrize("field", ["batch_files", "batch_bytes"])
def test_batch_bounds_below_one_are_refused(tmp_path: Path, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RestoreTarget(tmp_path / "t", **{field: 0})  # type: ignore[arg-type]
    assert not (tmp_path / "t").exists()


RESTORE = """
import sys
from pathlib import Path
from sergas_guard.recovery.restore_target import RestoreTarget
target = RestoreTarget(Path(sys.argv[1]), batch_files=4)
for i in range(10):
    target.file(f"d{i % 2}/f{i}", [b"x" * 5000], mode=0o644, mtime_ns=0)
target.finish()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_every_rename_follows_the_fsync_of_its_file(tmp_path: Path) -> None:
    """On the real system calls, across the writer threads: each temporary file was
    fsynced to completion before the rename that publishes it started."""
    log = tmp_path / "strace.log"
    subprocess.run(
        [
            "strace", "-f", "-qq", "-y", "-o", str(log),
            "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
            sys.executable, "-c", textwrap.dedent(RESTORE), str(tmp_path / "t"),
        ],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    temp = rf"{TEMP_PREFIX}[0-9a-f]+\.tmp"
    started: dict[str, str] = {}  # thread -> the file whose fsync it is in
    fsynced: set[str] = set()
    renames = 0
    directory_syncs = 0
    for line in log.read_text().splitlines():
        thread = line.split(" ", 1)[0]
        if call := re.search(r" fsync\(\d+<([^>]*)>", line):
            name = os.path.basename(call.group(1))
            if re.fullmatch(temp, name) is None:
                directory_syncs += 1
                continue
            started[thread] = name
            if line.rstrip().endswith("= 0"):
                fsynced.add(name)
        elif "<... fsync resumed>" in line and line.rstrip().endswith("= 0"):
            if thread in started:
                fsynced.add(started.pop(thread))
        elif renamed := re.search(rf'rename\w*\(\d+<[^>]*>, "({temp})"', line):
            renames += 1
            assert renamed.group(1) in fsynced, line
    assert renames == 10
    assert len(fsynced) == 10
    # The directories (d0, d1 and the root), once each by finish().
    assert directory_syncs == 3
    assert sorted(os.listdir(tmp_path / "t" / "d1")) == [f"f{i}" for i in (1, 3, 5, 7, 9)]


def test_a_write_failing_in_a_writer_thread_fails_the_restore_and_leaves_no_temps(
    tmp_path: Path,
) -> None:
    """A real write error (EFBIG past RLIMIT_FSIZE) in a small file, which a writer
    thread writes: the batch's publication names the file, and nothing is left."""
    root = tmp_path / "t"
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        import resource
        import signal

        message = b"no error"
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            target = RestoreTarget(root)
            target.file("small", [b"s" * 100], mode=0o644, mtime_ns=MTIME)
            target.file("too-big", [b"b" * 6000], mode=0o644, mtime_ns=MTIME)
            target.file("after", [b"a" * 100], mode=0o644, mtime_ns=MTIME)
            try:
                target.finish()
            except Exception as exc:  # reported to the parent
                message = f"{type(exc).__name__}: {exc}".encode()
        finally:
            os.write(writer, message)
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        reported = pipe.read().decode()
    os.waitpid(pid, 0)
    assert reported.startswith("BackupError: restoring 'too-big' failed"), reported
    assert os.listdir(root) == []
