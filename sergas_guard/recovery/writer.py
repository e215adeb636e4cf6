"""Writing chunks into a repository: deduplicate, compress, seal, pack, index.

A :class:`ChunkWriter` keeps one pack under construction in memory (at most the pack
size plus one chunk), writes it when full, and on ``flush`` writes one index fragment
naming the packs it wrote. A writer killed before its flush loses only the pack under
construction: the packs already written describe themselves and are re-used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import zstandard

from sergas_guard.errors import BackupError
from sergas_guard.recovery.packs import PackBuilder, PackEntry, encode_blob

if TYPE_CHECKING:
    from sergas_guard.recovery.repository import Repository

__all__ = ["ChunkRef", "ChunkWriter"]


@dataclass(frozen=True)
class ChunkRef:
    """A stored chunk: ``id`` is the hex keyed MAC of its plaintext, ``size`` its length."""

    id: str
    size: int


class ChunkWriter:
    """Adds chunks to the repository, packing them; ``flush`` makes them durable.

    Holds the repository lock shared from ``__enter__`` to ``__exit__`` unless the thread
    already holds it. Not thread-safe: one writer per thread.
    """

    def __init__(self, repository: Repository) -> None:
        self._repo = repository
        self._builder = PackBuilder()
        self._unindexed: dict[str, list[PackEntry]] = {}
        level = repository.compression_level
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._stack = contextlib.ExitStack()
        #: Bytes of new (not deduplicated) chunk data added, before compression.
        self.new_bytes = 0
        #: Bytes of sealed blobs written into packs.
        self.stored_bytes = 0

    def __enter__(self) -> ChunkWriter:
        self._stack.enter_context(self._repo.lock())
        self._repo._refresh()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._stack:
            if exc_type is None:
                self.flush()
            else:
                # Keep what was already chunked so the next run re-uses it; the original
                # error matters more than a failure to save.
                with contextlib.suppress(OSError, BackupError):
                    self.flush()

    def add(self, data: bytes, *, compress: bool = True) -> ChunkRef:
        """Store ``data`` as a chunk unless the repository or this writer has it already.

        Raises OSError when a full pack cannot be written.
        """
        cid = self._repo.chunk_id(data)
        ref = ChunkRef(cid, len(data))
        if cid in self._builder or self._repo.has_chunk(cid):
            return ref
        blob = encode_blob(
            self._repo._sealer, self._compressor if compress else None, cid, bytes(data)
        )
        self._builder.add(cid, blob, len(data))
        self.new_bytes += len(data)
        self.stored_bytes += len(blob)
        if self._builder.size >= self._repo.pack_size:
            self._write_pack()
        return ref

    def _write_pack(self) -> None:
        if not len(self._builder):
            return
        pack_id, content, entries = self._builder.finish(self._repo._sealer)
        self._repo._add_pack(pack_id, content, entries)
        self._unindexed[pack_id] = entries
        self._builder = PackBuilder()

    def flush(self) -> None:
        """Write the pending pack, then one index fragment naming every pack written
        since the last flush. After it returns, every chunk added is durable.

        Raises OSError on I/O failure.
        """
        self._write_pack()
        if self._unindexed:
            self._repo._write_fragment(self._unindexed)
            self._unindexed = {}
