"""Chunker: the in-memory path for short streams cuts exactly where streaming would.

Dedup across files depends on it: a file read whole and cut with ``cut_buf`` must give
the same chunks as the same bytes met inside a longer stream cut with ``cut_stream``.
The reference here is pyfastcdc's ``cut_stream`` itself, fed through ``io.BytesIO``.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from sergas_guard.recovery.chunking import Chunker, ChunkerParams, _read_head

# Small sizes (pyfastcdc's lower bounds) so that random data crosses the limits cheaply.
SMALL = ChunkerParams(avg_size=1024, min_size=256, max_size=4096)


def streamed(data: bytes, params: ChunkerParams, seed: int) -> list[bytes]:
    cdc = FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size, seed=seed)
    return [bytes(chunk.data) for chunk in cdc.cut_stream(io.BytesIO(data))]


class Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per call, with no descriptor."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def random_bytes(rng: random.Random, size: int) -> bytes:
    """Random bytes with runs, so that some cut points come from content, some from limits."""
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.2:
            out += bytes([rng.randrange(256)]) * rng.randrange(1, 2000)
        else:
            out += rng.randbytes(rng.randrange(1, 3000))
    return bytes(out[:size])


sizes = st.one_of(
    st.integers(0, 4 * SMALL.max_size),
    st.sampled_from([SMALL.min_size, SMALL.min_size + 1, SMALL.max_size - 1, SMALL.max_size]),
    st.sampled_from([SMALL.max_size + 1, 2 * SMALL.max_size + 1]),
)


@settings(max_examples=120, deadline=None)
@given(
    size=sizes,
    data_seed=st.integers(0, 2**32),
    seed=st.integers(1, 2**63 - 1),
    step=st.integers(1, 5000),
)
def test_every_reading_path_cuts_the_streaming_boundaries(
    tmp_path_factory: pytest.TempPathFactory, size: int, data_seed: int, seed: int, step: int
) -> None:
    data = random_bytes(random.Random(data_seed), size)
    expected = streamed(data, SMALL, seed)
    assert b"".join(expected) == data
    chunker = Chunker(SMALL, seed)
    # A real file opened as the filesystem strategy opens it (size known from fstat).
    path = tmp_path_factory.mktemp("chunking") / "file"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        assert list(chunker.chunks(stream)) == expected
    with open(path, "rb", buffering=0) as raw:
        assert list(chunker.chunks(raw)) == expected
    # No descriptor, and reads shorter than asked for.
    assert list(chunker.chunks(io.BytesIO(data))) == expected
    assert list(chunker.chunks(io.BufferedReader(Trickle(data, step)))) == expected
    assert list(chunker.chunks(Trickle(data, step))) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        ChunkerParams().min_size,
        ChunkerParams().min_size + 1,
        ChunkerParams().max_size - 1,
        ChunkerParams().max_size,
        ChunkerParams().max_size + 1,
        2 * ChunkerParams().max_size + 3,
    ],
)
def test_default_sizes_cut_the_streaming_boundaries(tmp_path: Path, size: int) -> None:
    data = random_bytes(random.Random(size), size)
    seed = 0x5EED5EED5EED5EED
    path = tmp_path / "file"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        got = list(Chunker(ChunkerParams(), seed).chunks(stream))
    assert got == streamed(data, ChunkerParams(), seed)
    assert all(len(chunk) <= ChunkerParams().max_size for chunk in got)


def test_a_small_file_inside_a_larger_one_shares_its_chunks(tmp_path: Path) -> None:
    """The dedup this is for: a file's chunks reappear inside a stream that contains it
    after a content-defined cut."""
    rng = random.Random(7)
    chunker = Chunker(SMALL, 99)
    whole = random_bytes(rng, 6 * SMALL.max_size)
    pieces = streamed(whole, SMALL, 99)
    tail = b"".join(pieces[1:])
    path = tmp_path / "tail"
    path.write_bytes(tail[: SMALL.max_size])
    with open(path, "rb") as stream:
        small = list(chunker.chunks(stream))
    # The first cuts of the shorter file are cuts of the longer stream.
    assert len(small) >= 3
    assert small[:-1] == pieces[1 : len(small)]


def test_a_file_that_grew_after_its_size_was_taken_is_read_on(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"a" * 100)
    with open(path, "rb") as stream:
        # The size said 10 bytes; the file holds 100: all of them are read.
        assert _read_head(stream, 10, 4096) == b"a" * 100
    path.write_bytes(os.urandom(5000))
    with open(path, "rb") as stream:
        head = _read_head(stream, 10, 4096)
        # Past the limit, reading stops one byte over it: the rest is streamed.
        assert len(head) == 4097
        assert head + stream.read() == path.read_bytes()
