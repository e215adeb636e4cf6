"""Content-defined chunking (FastCDC) with a per-repository secret seed.

Boundaries depend on content, not offsets, so an insertion early in a file shifts only
the chunks around it and the rest deduplicate. The gear table is perturbed by the
repository's secret seed: without it, chunk sizes would reveal which known files a
repository holds (the fingerprinting attack on unseeded CDC).

A stream no longer than the maximum chunk size (most files of a typical tree) is read in
one call and cut with ``FastCDC.cut_buf``: ``cut_stream`` allocates a buffer of twice
the maximum chunk size per call, about 0.5-0.9 ms whatever the stream's size, against a
few microseconds to cut a small buffer. Both paths cut the same boundaries: FastCDC
decides each cut from at most the next ``max_size`` bytes, and the streaming path always
holds that much (or the rest of the stream) before cutting, so where a file's chunks
start and end does not depend on which path read it, and dedup across files holds.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc import FastCDC

__all__ = ["ChunkerParams", "Chunker"]


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC sizes in bytes. FastCDC's output averages ``avg_size + min_size``: the
    defaults give ~1 MiB chunks (restic's and kopia's order of magnitude), never above 8 MiB.
    """

    avg_size: int = 768 * 1024
    min_size: int = 256 * 1024
    max_size: int = 8 * 1024 * 1024


class Chunker:
    """Splits streams into content-defined chunks."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._seed = seed

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """The chunks of ``stream`` in order; memory holds at most a few ``max_size`` buffers.

        Raises OSError from reading ``stream``.
        """
        limit = self.params.max_size
        size = _size_hint(stream)
        head = b""
        if size is None or size <= limit:
            head = _read_head(stream, size, limit)
            if len(head) <= limit:
                yield from self._cut_buffer(head)
                return
        yield from self._cut_stream(_Prefixed(head, stream) if head else stream)

    def _cdc(self) -> FastCDC:
        # A FastCDC object is not safe to share between threads; one per call is cheap.
        return FastCDC(
            self.params.avg_size,
            min_size=self.params.min_size,
            max_size=self.params.max_size,
            seed=self._seed,
        )

    def _cut_buffer(self, data: bytes) -> Iterator[bytes]:
        """The chunks of a whole stream already in memory."""
        if len(data) <= self.params.min_size:
            # FastCDC never cuts within its minimum size: one chunk, no copy.
            if data:
                yield data
            return
        for chunk in self._cdc().cut_buf(data):
            yield bytes(chunk.data)

    def _cut_stream(self, stream: BinaryIO | _Prefixed) -> Iterator[bytes]:
        for chunk in self._cdc().cut_stream(stream):
            # The chunk's view is only valid until the next one is cut: copy it.
            yield bytes(chunk.data)


def _size_hint(stream: BinaryIO) -> int | None:
    """The size of a regular file behind ``stream`` (it may still change), else None."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        # io.BytesIO and the like have no descriptor (io.UnsupportedOperation).
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _read_head(stream: BinaryIO, size: int | None, limit: int) -> bytes:
    """Read ``stream`` to its end, or stop once more than ``limit`` bytes were read.

    ``size`` is where the end is expected; a stream that turns out longer (a file
    growing while it is read) is read on up to the limit, so the result is the whole
    stream exactly when it is at most ``limit`` bytes long.
    """
    pieces: list[bytes] = []
    have = 0
    want = limit + 1 if size is None else size + 1
    while have <= limit:
        piece = stream.read(want - have)
        if not piece:
            break
        pieces.append(piece)
        have += len(piece)
        want = limit + 1
    return b"".join(pieces)


class _Prefixed:
    """A reader giving ``head`` and then the rest of ``stream``, for ``cut_stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream
        # readinto() spares a copy; BinaryIO does not promise it (a plain read() will do).
        self._readinto = getattr(stream, "readinto", None)

    def readinto(self, buffer: memoryview) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._readinto is not None:
            return int(self._readinto(buffer) or 0)
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
