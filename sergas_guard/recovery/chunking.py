"""Content-defined chunking (FastCDC) with a per-repository secret seed.

Boundaries depend on content, not offsets, so an insertion early in a file shifts only
the chunks around it and the rest deduplicate. The gear table is perturbed by the
repository's secret seed: without it, chunk sizes would reveal which known files a
repository holds (the fingerprinting attack on unseeded CDC).
"""

from __future__ import annotations

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
        # A FastCDC object is not safe to share between threads; one per call is cheap.
        cdc = FastCDC(
            self.params.avg_size,
            min_size=self.params.min_size,
            max_size=self.params.max_size,
            seed=self._seed,
        )
        for chunk in cdc.cut_stream(stream):
            # The chunk's view is only valid until the next one is cut: copy it.
            yield bytes(chunk.data)
