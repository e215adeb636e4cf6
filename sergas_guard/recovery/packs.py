"""Pack files: many sealed chunks in one immutable file, with their own table at the end.

Layout of ``data/<2 hex>/<pack id>`` (the id is the SHA-256 of the whole file, so any
flipped byte is detectable without keys)::

    blob 0 | blob 1 | ... | header blob | header length (u32 LE) | b"SGPACK01"

A blob is ``seal(flag || payload, aad=chunk id)`` with flag 0 (payload stored as is) or
1 (payload is a zstd frame). Binding the seal to the chunk id means a blob cannot be
passed off as another chunk. The header blob is ``seal(JSON [[chunk id, offset, length,
plaintext size], ...], aad=b"pack-header")``: a pack is self-describing, so the index can
be rebuilt from packs alone and a backup killed before writing its index loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import zstandard

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery.crypto import Sealer, chunk_id

__all__ = ["PACK_MAGIC", "PackBuilder", "PackEntry", "decode_blob", "encode_blob", "read_header"]

PACK_MAGIC = b"SGPACK01"
_TAIL = struct.Struct("<I")
_TAIL_SIZE = _TAIL.size + len(PACK_MAGIC)
_HEADER_AAD = b"pack-header"
_RAW, _ZSTD = 0, 1


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk's blob sits in its pack."""

    chunk_id: str
    offset: int
    length: int
    size: int

    def to_json(self) -> list[str | int]:
        return [self.chunk_id, self.offset, self.length, self.size]

    @classmethod
    def from_json(cls, raw: object) -> PackEntry:
        """Raises IntegrityError when ``raw`` is not an entry."""
        if not (isinstance(raw, list) and len(raw) == 4):
            raise IntegrityError("a pack table entry is malformed")
        cid, offset, length, size = raw
        if not (
            isinstance(cid, str)
            and len(cid) == 64
            and all(isinstance(v, int) and v >= 0 for v in (offset, length, size))
        ):
            raise IntegrityError("a pack table entry is malformed")
        return cls(cid, offset, length, size)


def encode_blob(
    sealer: Sealer,
    compressor: zstandard.ZstdCompressor | None,
    cid: str,
    data: bytes,
) -> bytes:
    """The sealed blob for chunk ``cid``; compressed only when that makes it smaller."""
    if compressor is not None:
        packed = compressor.compress(data)
        if len(packed) < len(data):
            return sealer.seal(bytes((_ZSTD,)) + packed, bytes.fromhex(cid))
    return sealer.seal(bytes((_RAW,)) + data, bytes.fromhex(cid))


def decode_blob(
    sealer: Sealer, mac_key: bytes, entry: PackEntry, blob: bytes | memoryview
) -> bytes:
    """The plaintext of ``entry`` from its stored ``blob``.

    Raises IntegrityError when the blob fails authentication, does not decompress, or its
    plaintext does not hash to the chunk id.
    """
    if len(blob) != entry.length:
        raise IntegrityError(f"chunk {entry.chunk_id} is truncated")
    try:
        inner = sealer.open(blob, bytes.fromhex(entry.chunk_id))
    except IntegrityError as exc:
        raise IntegrityError(f"chunk {entry.chunk_id}: {exc}") from None
    flag, payload = inner[:1], memoryview(inner)[1:]  # a view: the frame is not copied
    if flag == bytes((_ZSTD,)):
        try:
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=entry.size)
        except zstandard.ZstdError:
            raise IntegrityError(f"chunk {entry.chunk_id} does not decompress") from None
    elif flag == bytes((_RAW,)):
        data = bytes(payload)
    else:
        raise IntegrityError(f"chunk {entry.chunk_id} has an unknown encoding")
    if len(data) != entry.size or chunk_id(mac_key, data) != entry.chunk_id:
        raise IntegrityError(f"chunk {entry.chunk_id} does not match its id")
    return data


class PackBuilder:
    """Collects blobs in memory until the pack is written (bounded by the pack size)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._entries: list[PackEntry] = []
        self._ids: set[str] = set()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: object) -> bool:
        return cid in self._ids

    def add(self, cid: str, blob: bytes, size: int) -> None:
        self._entries.append(PackEntry(cid, self.size, len(blob), size))
        self._ids.add(cid)
        self._parts.append(blob)
        self.size += len(blob)

    def finish(self, sealer: Sealer) -> tuple[str, list[bytes], list[PackEntry]]:
        """The pack's id, its bytes (in pieces, to spare a copy) and its table."""
        table = json.dumps([e.to_json() for e in self._entries]).encode("utf-8")
        header = sealer.seal(table, _HEADER_AAD)
        parts = [*self._parts, header, _TAIL.pack(len(header)), PACK_MAGIC]
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        return digest.hexdigest(), parts, list(self._entries)


def read_header(path: Path, sealer: Sealer) -> list[PackEntry]:
    """The table at the end of the pack at ``path``.

    Raises IntegrityError when the pack is truncated or its table is damaged, and
    FileNotFoundError when it is gone.
    """
    with open(path, "rb") as pack:
        total = os.fstat(pack.fileno()).st_size
        if total < _TAIL_SIZE:
            raise IntegrityError(f"pack {path.name} is truncated")
        pack.seek(total - _TAIL_SIZE)
        tail = pack.read(_TAIL_SIZE)
        (header_length,) = _TAIL.unpack(tail[: _TAIL.size])
        if tail[_TAIL.size :] != PACK_MAGIC or header_length > total - _TAIL_SIZE:
            raise IntegrityError(f"pack {path.name} is truncated or not a pack")
        body = total - _TAIL_SIZE - header_length
        pack.seek(body)
        header = pack.read(header_length)
    try:
        table = json.loads(sealer.open(header, _HEADER_AAD))
    except (IntegrityError, ValueError):
        raise IntegrityError(f"pack {path.name} has a damaged table") from None
    if not isinstance(table, list):
        raise IntegrityError(f"pack {path.name} has a damaged table")
    entries = [PackEntry.from_json(raw) for raw in table]
    if any(e.offset + e.length > body for e in entries):
        raise IntegrityError(f"pack {path.name} has a table pointing past its data")
    return entries
