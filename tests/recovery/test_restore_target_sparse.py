"""Sparse restores: whole zero blocks become holes, the content stays byte-identical.

Both write paths are covered: files up to 1 MiB (writer threads) and larger ones
(streamed by the caller). Disk usage is read from ``st_blocks`` on the test's temporary
directory, after checking that it supports holes at all.
"""

from __future__ import annotations

import os
import tempfile
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.recovery.restore_target import RestoreTarget

MTIME = 1_700_000_000_000_000_000
MIB = 1024 * 1024
BLOCK = 4096


def supports_holes(directory: Path) -> bool:
    probe = directory / "probe"
    with probe.open("wb") as handle:
        handle.truncate(8 * MIB)
    try:
        return probe.stat().st_blocks * 512 < MIB
    finally:
        probe.unlink()


def restore(root: Path, name: str, chunks: list[bytes]) -> Path:
    with RestoreTarget(root, overwrite=True) as target:
        target.file(name, chunks, mode=0o644, mtime_ns=MTIME)
        target.finish()
    return root / name


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in pairwise(bounds)]


def on_disk(path: Path) -> int:
    return path.stat().st_blocks * 512


# A segment is a run of zeros or of non-zero data; lengths around block multiples.
zero_run = st.sampled_from([1, 511, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 7, 70_000])
data_run = st.integers(1, 9000)
segments = st.lists(
    st.one_of(zero_run.map(lambda n: bytes(n)), data_run.map(lambda n: b"\x5a" * n)),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    segments=segments,
    seed=st.binary(min_size=1, max_size=32),
    cuts=st.lists(st.integers(0, 4 * MIB), max_size=8),
    big=st.booleans(),
)
def test_content_is_byte_identical(
    segments: list[bytes], seed: bytes, cuts: list[int], big: bool
) -> None:
    # ``big`` adds 1.5 MiB of zeros in the middle, so the file takes the streamed path.
    parts = [seed, *segments]
    if big:
        parts.insert(len(parts) // 2, bytes(3 * MIB // 2))
    data = b"".join(parts)
    with tempfile.TemporaryDirectory() as tmp:
        restored = restore(Path(tmp) / "t", "f", split(data, cuts))
        assert restored.read_bytes() == data
        assert restored.stat().st_size == len(data)


@pytest.mark.parametrize("size", [MIB, 64 * MIB], ids=["writer-thread", "streamed"])
def test_mostly_zero_file_takes_few_blocks(tmp_path: Path, size: int) -> None:
    if not supports_holes(tmp_path):
        pytest.skip("the temporary directory's filesystem does not support holes")
    head, tail = os.urandom(5000), os.urandom(3000)
    data = head + bytes(size - len(head) - len(tail)) + tail
    chunks = split(data, list(range(0, size, 256 * 1024)))
    restored = restore(tmp_path / "t", "f", chunks)
    assert restored.read_bytes() == data
    assert on_disk(restored) <= 64 * 1024


@pytest.mark.parametrize("size", [MIB, 3 * MIB])
def test_file_ending_in_a_hole_keeps_its_size(tmp_path: Path, size: int) -> None:
    if not supports_holes(tmp_path):
        pytest.skip("the temporary directory's filesystem does not support holes")
    data = b"x" * 10 + bytes(size - 10)
    restored = restore(tmp_path / "t", "f", [data[: size // 2], data[size // 2 :]])
    assert restored.stat().st_size == size
    assert restored.read_bytes() == data
    assert on_disk(restored) <= 16 * 1024


def test_all_zero_and_empty_files(tmp_path: Path) -> None:
    root = tmp_path / "t"
    with RestoreTarget(root) as target:
        target.file("zeros", [bytes(2 * MIB)], mode=0o600, mtime_ns=MTIME)
        target.file("empty", [], mode=0o600, mtime_ns=MTIME)
        target.file("empty-chunks", [b"", b""], mode=0o600, mtime_ns=MTIME)
        target.finish()
    assert (root / "zeros").read_bytes() == bytes(2 * MIB)
    assert (root / "empty").read_bytes() == b""
    assert (root / "empty-chunks").read_bytes() == b""
    if supports_holes(tmp_path):
        assert on_disk(root / "zeros") == 0


def test_random_data_is_written_dense(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    restored = restore(tmp_path / "t", "f", split(data, [MIB, 2 * MIB]))
    assert restored.read_bytes() == data
    assert on_disk(restored) >= len(data)
