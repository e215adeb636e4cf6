"""The chunk index: chunk id → (pack, offset, length, plaintext size).

On disk, ``index/<id>`` fragments (``id`` = SHA-256 of the file) each hold
``seal(zstd(JSON {"version": 1, "packs": {pack id: [[chunk id, offset, length, size],
...]}}), aad=b"index")``. Writers add one fragment per flush; garbage collection replaces
them all by one. In memory the index is the union of every fragment plus the tables of
packs no fragment names yet (a backup killed between pack and index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zstandard

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery.crypto import Sealer
from sergas_guard.recovery.packs import PackEntry

__all__ = ["ChunkLocation", "ChunkIndex", "decode_fragment", "encode_fragment"]

_AAD = b"index"
_MAX_FRAGMENT = 1 << 30


@dataclass(frozen=True)
class ChunkLocation:
    """One stored copy of a chunk."""

    pack_id: str
    entry: PackEntry


def encode_fragment(sealer: Sealer, packs: dict[str, list[PackEntry]]) -> bytes:
    """The sealed fragment naming ``packs`` and their tables."""
    body = {"version": 1, "packs": {p: [e.to_json() for e in es] for p, es in packs.items()}}
    raw = zstandard.ZstdCompressor().compress(json.dumps(body).encode("utf-8"))
    return sealer.seal(raw, _AAD)


def decode_fragment(sealer: Sealer, blob: bytes) -> dict[str, list[PackEntry]]:
    """The packs and tables of a fragment. Raises IntegrityError when it is damaged."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            sealer.open(blob, _AAD), max_output_size=_MAX_FRAGMENT
        )
        body = json.loads(raw)
        packs = body["packs"]
        if body["version"] != 1 or not isinstance(packs, dict):
            raise ValueError("unknown fragment version")
        return {str(p): [PackEntry.from_json(e) for e in es] for p, es in packs.items()}
    except (zstandard.ZstdError, ValueError, KeyError, TypeError):
        raise IntegrityError("an index fragment is damaged") from None


class ChunkIndex:
    """The in-memory union of fragments and pack tables; the first copy seen wins."""

    def __init__(self) -> None:
        self._chunks: dict[str, ChunkLocation] = {}
        self.packs: dict[str, list[PackEntry]] = {}

    def __contains__(self, cid: object) -> bool:
        return cid in self._chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def get(self, cid: str) -> ChunkLocation | None:
        return self._chunks.get(cid)

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        table = self.packs.setdefault(pack_id, [])
        known = {e.chunk_id for e in table}
        for entry in entries:
            if entry.chunk_id in known:
                continue
            table.append(entry)
            self._chunks.setdefault(entry.chunk_id, ChunkLocation(pack_id, entry))

    def locations(self) -> Iterator[tuple[str, ChunkLocation]]:
        return iter(self._chunks.items())
