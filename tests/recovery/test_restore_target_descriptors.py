"""The restore target's descriptors: shared per directory, all closed at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sergas_guard.errors import UnsafeRestoreError
from sergas_guard.recovery.restore_target import TEMP_PREFIX, RestoreTarget


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_no_descriptor_outlives_a_finished_or_aborted_restore(tmp_path: Path) -> None:
    """Files in directories visited, left and visited again, small and large, several
    batches: every descriptor is closed by finish() and by abort(), and the aborted
    restore leaves no temporary file."""
    before = open_descriptors()
    root = tmp_path / "done"
    target = RestoreTarget(root, batch_files=7)
    for i in range(60):
        data = [bytes([i]) * (2 << 20)] if i % 25 == 0 else [bytes([i]) * 100]
        target.file(f"d{i % 3}/f{i}", data, mode=0o644, mtime_ns=0)
    target.symlink("d0/link", "f0")
    target.finish()
    assert open_descriptors() == before
    assert (root / "d1" / "f25").read_bytes() == bytes([25]) * (2 << 20)
    assert (root / "d2" / "f59").read_bytes() == bytes([59]) * 100

    aborted = tmp_path / "aborted"
    target = RestoreTarget(aborted, batch_files=7)
    for i in range(20):
        target.file(f"d{i % 3}/f{i}", [b"x" * 100], mode=0o644, mtime_ns=0)
    with pytest.raises(UnsafeRestoreError):
        target.file("d1/f1/under-a-file", [b"y"], mode=0o644, mtime_ns=0)
    target.abort()
    assert open_descriptors() == before
    leftovers = [n for _, _, names in os.walk(aborted) for n in names if n.startswith(TEMP_PREFIX)]
    assert leftovers == []
