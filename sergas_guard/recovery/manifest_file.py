"""How a manifest is stored: streamed in sealed segments (format 2), or whole (format 1).

A manifest lists every entry of a backed-up tree; with a million files that is hundreds
of MiB of JSON, so format 2 never holds it whole. The file ``snapshots/<backup id>``::

    b"SGMANIF2"                          magic, 8 bytes
    segment 0 .. n-1                     seal(zstd(JSON list of entry objects),
                                              aad = "manifest-segment:<id>:<i>")
    header                               seal(zstd(JSON envelope), aad = "manifest:<id>")
    header length                        8 bytes, little endian
    b"SGMEND02"                          8 bytes

The envelope is ``{"format": 2, "segments": [[length, entries, sha256], ...],
"manifest": {...}}``: ``manifest`` is what the writer's caller gave as the header (id,
parent, chain root, type, times, source, strategy, stats...), and each segment is
listed with its sealed length, its number of entries and the SHA-256 of its sealed
bytes. A segment closes once its JSON reaches :data:`SEGMENT_BYTES` (1 MiB) or
:data:`SEGMENT_ENTRIES` entries, so a writer and a reader hold one segment at a time.

The header sits at the end (it is only known once every entry is written) and is read
without the entries: two ``pread`` calls. A segment is checked against the header's
hash before it is opened, and its seal names the backup and its position, so a flipped
byte, a truncated file, a dropped, repeated or reordered segment, or a segment copied
from another backup is an IntegrityError naming the backup. The whole file is written
as a temporary file, fsynced and renamed into place, so a writer killed at any point
leaves no manifest (only a ``.tmp-*`` file that garbage collection removes).

Format 1 (written before streaming existed, still read): the whole file is
``seal(zstd(JSON), aad = "manifest:<id>")`` of one document holding ``entries``. A
format-1 seal starts with a random nonce or a MAC, never (but with odds of 2**-64) with
the magic above.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import zstandard

from sergas_guard.errors import BackupError, BackupNotFoundError, IntegrityError
from sergas_guard.recovery.atomic import TEMP_PREFIX, fsync_dir
from sergas_guard.recovery.crypto import Sealer

__all__ = [
    "SEGMENT_BYTES",
    "SEGMENT_ENTRIES",
    "ManifestWriter",
    "StoredHeader",
    "read_stored_entries",
    "read_stored_header",
]

MAGIC = b"SGMANIF2"
END_MAGIC = b"SGMEND02"
_TRAILER = 16  # header length (8 bytes) + END_MAGIC
#: A segment closes once its JSON holds this many bytes (or entries).
SEGMENT_BYTES = 1 << 20
SEGMENT_ENTRIES = 8192
# Decompression bounds: a header lists segments (~80 bytes each); a segment holds up to
# SEGMENT_BYTES plus one entry, and one entry of a huge file lists ~70 bytes per MiB.
_MAX_HEADER = 1 << 28
_MAX_SEGMENT = 1 << 30
# Format 1 documents were read whole with this bound.
_MAX_FORMAT1 = 1 << 31
# One encoder for every entry: json.dumps with options builds a new encoder per call,
# which showed up per file in an unchanged backup (CPU 1.18x the old writer's -> 1.02x).
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _header_aad(backup_id: str) -> bytes:
    return b"manifest:" + backup_id.encode("utf-8")


def _segment_aad(backup_id: str, number: int) -> bytes:
    return f"manifest-segment:{backup_id}:{number}".encode()


class ManifestWriter:
    """Writes one manifest entry by entry; :meth:`commit` puts it in place.

    Use it as a context manager: leaving the block without :meth:`commit` (an error, a
    cancelled backup) removes the temporary file, so no manifest appears. Not
    thread-safe.
    """

    def __init__(
        self,
        path: Path,
        backup_id: str,
        sealer: Sealer,
        compression_level: int,
        *,
        segment_bytes: int | None = None,
        segment_entries: int | None = None,
    ) -> None:
        """Start the temporary file beside ``path`` (segments bounded by ``segment_bytes``
        and ``segment_entries``, default :data:`SEGMENT_BYTES` and
        :data:`SEGMENT_ENTRIES`). Raises OSError when it cannot be created."""
        self.path = path
        self.backup_id = backup_id
        self._sealer = sealer
        self._compressor = zstandard.ZstdCompressor(level=compression_level)
        self._segment_bytes = SEGMENT_BYTES if segment_bytes is None else segment_bytes
        self._segment_entries = SEGMENT_ENTRIES if segment_entries is None else segment_entries
        self._temp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
        fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._file.write(MAGIC)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._segments: list[list[Any]] = []
        #: Entries added so far.
        self.entry_count = 0

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def add(self, entry: Mapping[str, Any]) -> None:
        """Append one entry (a JSON-serialisable mapping).

        Raises BackupError when it is not JSON-serialisable or the manifest is already
        committed or aborted, OSError when a full segment cannot be written.
        """
        if self._file is None:
            raise BackupError(f"the manifest of backup {self.backup_id} is already closed")
        try:
            encoded = _encode(entry).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise BackupError(
                f"an entry of manifest {self.backup_id} is not JSON-serialisable: {exc}"
            ) from None
        self._pending.append(encoded)
        self._pending_bytes += len(encoded) + 1
        self.entry_count += 1
        if (
            self._pending_bytes >= self._segment_bytes
            or len(self._pending) >= self._segment_entries
        ):
            self._write_segment()

    def _write_segment(self) -> None:
        assert self._file is not None
        if not self._pending:
            return
        raw = b"[" + b",".join(self._pending) + b"]"
        sealed = self._sealer.seal(
            self._compressor.compress(raw), _segment_aad(self.backup_id, len(self._segments))
        )
        self._file.write(sealed)
        self._segments.append([len(sealed), len(self._pending), hashlib.sha256(sealed).hexdigest()])
        self._pending = []
        self._pending_bytes = 0

    def commit(self, header: Mapping[str, Any]) -> None:
        """Write the last segment and ``header``, make the file durable and rename it
        onto the manifest's name: from here on the backup exists.

        Write it only after the chunks the entries name are flushed. Raises BackupError
        when ``header`` is not JSON-serialisable, OSError on I/O failure (the temporary
        file is removed then).
        """
        if self._file is None:
            raise BackupError(f"the manifest of backup {self.backup_id} is already closed")
        try:
            self._write_segment()
            try:
                envelope = {"format": 2, "segments": self._segments, "manifest": dict(header)}
                raw = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise BackupError(
                    f"manifest {self.backup_id} is not JSON-serialisable: {exc}"
                ) from None
            sealed = self._sealer.seal(self._compressor.compress(raw), _header_aad(self.backup_id))
            self._file.write(sealed)
            self._file.write(len(sealed).to_bytes(8, "little") + END_MAGIC)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Drop the unfinished manifest (nothing if already committed). Never raises."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        self._temp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class StoredHeader:
    """A stored manifest without its entries: ``document`` is the header its writer gave
    (format 1: the whole document but ``entries``)."""

    document: dict[str, Any]
    entry_count: int
    format: int


def _damaged(backup_id: str, why: str) -> IntegrityError:
    return IntegrityError(f"the manifest of backup {backup_id} is damaged ({why})")


def _open_manifest(path: Path, backup_id: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise BackupNotFoundError(f"no backup {backup_id}") from None


def _unseal_json(
    sealer: Sealer, blob: bytes, aad: bytes, limit: int, backup_id: str, what: str
) -> Any:
    try:
        raw = zstandard.ZstdDecompressor().decompress(sealer.open(blob, aad), max_output_size=limit)
        return json.loads(raw)
    except (IntegrityError, zstandard.ZstdError, ValueError):
        raise _damaged(backup_id, f"{what} does not open") from None


@dataclass(frozen=True, slots=True)
class _Layout:
    header: StoredHeader
    # (offset, length, entries, sha256) of each segment
    segments: tuple[tuple[int, int, int, str], ...] = ()
    # Format 1 has no separate header: its entries come along, read whole as then.
    format1_entries: tuple[Any, ...] = ()


def _read_layout(stream: BinaryIO, sealer: Sealer, backup_id: str) -> _Layout:
    fd = stream.fileno()
    size = os.fstat(fd).st_size
    if os.pread(fd, len(MAGIC), 0) != MAGIC:
        return _format1(stream, sealer, backup_id)
    trailer = os.pread(fd, _TRAILER, size - _TRAILER) if size >= len(MAGIC) + _TRAILER else b""
    if len(trailer) != _TRAILER or trailer[8:] != END_MAGIC:
        raise _damaged(backup_id, "truncated: no trailer")
    length = int.from_bytes(trailer[:8], "little")
    start = size - _TRAILER - length
    if length > _MAX_HEADER or start < len(MAGIC):
        raise _damaged(backup_id, "truncated: bad header length")
    envelope = _unseal_json(
        sealer,
        os.pread(fd, length, start),
        _header_aad(backup_id),
        _MAX_HEADER,
        backup_id,
        "its header",
    )
    try:
        if not isinstance(envelope, dict) or envelope["format"] != 2:
            raise ValueError("not a format-2 header")
        document = envelope["manifest"]
        if not isinstance(document, dict):
            raise TypeError("the manifest is not an object")
        segments = []
        offset = len(MAGIC)
        for item in envelope["segments"]:
            seg_length, entries, digest = item
            if not all(type(v) is int and v >= 0 for v in (seg_length, entries)):
                raise TypeError("bad segment sizes")
            if not isinstance(digest, str):
                raise TypeError("bad segment hash")
            segments.append((offset, seg_length, entries, digest))
            offset += seg_length
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(backup_id, f"malformed header: {exc}") from None
    if offset != start:
        # Bytes missing or added between the magic and the header: a segment was
        # dropped, truncated, repeated or inserted.
        raise _damaged(backup_id, "its segments do not add up to the header's list")
    count = sum(entries for _, _, entries, _ in segments)
    return _Layout(StoredHeader(document, count, 2), tuple(segments))


def _format1(stream: BinaryIO, sealer: Sealer, backup_id: str) -> _Layout:
    blob = stream.read()
    document = _unseal_json(sealer, blob, _header_aad(backup_id), _MAX_FORMAT1, backup_id, "it")
    if not isinstance(document, dict):
        raise _damaged(backup_id, "not an object")
    entries = document.pop("entries", [])
    if not isinstance(entries, list):
        raise _damaged(backup_id, "its entries are not a list")
    return _Layout(StoredHeader(document, len(entries), 1), format1_entries=tuple(entries))


def read_stored_header(path: Path, sealer: Sealer, backup_id: str) -> StoredHeader:
    """The header of the manifest at ``path`` (format 2: without reading any entry).

    Raises BackupNotFoundError when there is none, IntegrityError naming ``backup_id``
    when it is damaged, truncated or sealed for another backup.
    """
    with _open_manifest(path, backup_id) as stream:
        return _read_layout(stream, sealer, backup_id).header


def read_stored_entries(path: Path, sealer: Sealer, backup_id: str) -> Iterator[Any]:
    """The entries of the manifest at ``path`` in stored order, one segment in memory
    at a time (each checked against the header before it is opened).

    Raises (while iterating) BackupNotFoundError when there is no manifest,
    IntegrityError naming ``backup_id`` and the segment when one is damaged, missing,
    reordered or holds another number of entries than the header says.
    """
    with _open_manifest(path, backup_id) as stream:
        layout = _read_layout(stream, sealer, backup_id)
        yield from layout.format1_entries
        total = len(layout.segments)
        for number, (offset, length, count, digest) in enumerate(layout.segments):
            blob = os.pread(stream.fileno(), length, offset)
            if len(blob) != length or hashlib.sha256(blob).hexdigest() != digest:
                raise _damaged(backup_id, f"segment {number + 1} of {total} does not match")
            items = _unseal_json(
                sealer,
                blob,
                _segment_aad(backup_id, number),
                _MAX_SEGMENT,
                backup_id,
                f"segment {number + 1} of {total}",
            )
            if not isinstance(items, list) or len(items) != count:
                raise _damaged(backup_id, f"segment {number + 1} of {total} is malformed")
            yield from items
