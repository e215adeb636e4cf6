"""The backup repository: content-addressed, deduplicated, compressed, encrypted, crash-safe.

On-disk format, version 1::

    config                  JSON: version, id, encrypted, compression level, chunker
                            sizes, pack size (and, unencrypted only, the MAC key and seed)
    keys/<id>               encrypted only: the key file (scrypt params + salt, secrets
                            sealed with AES-256-GCM), see ``crypto``
    data/<2 hex>/<pack id>  pack files, see ``packs``
    index/<id>              index fragments, see ``index``
    snapshots/<backup id>   one manifest per backup, its entries in sealed segments and
                            its header at the end, see ``manifest_file``
    verified/<backup id>    the last clean verify of that backup, sealed (see ``maintenance``)
    locks/repository        the ``flock`` lock file, see ``lock``

Guarantees. Every file is written temp → fsync → ``os.replace`` → fsync of the
directory (``atomic``), in the order packs → index → manifest, so a manifest on disk
implies every chunk it names is stored. A writer killed at any point leaves complete
packs (which the next run re-uses: their tables are read back when no index names
them) and at worst temporary files, which garbage collection removes. Backups and
restores hold the repository lock shared, garbage collection exclusive, so collection
never removes chunks a running backup has written but not yet named in a manifest.

Callers that write a backup hold ``with repo.lock():`` from the first chunk to
``write_manifest``; ``writer()``, ``verify()`` and ``collect_garbage()`` take the lock
themselves when the calling thread holds none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from sergas_guard.errors import (
    BackupError,
    BackupNotFoundError,
    ConfigurationError,
    IntegrityError,
)
from sergas_guard.recovery import maintenance
from sergas_guard.recovery.atomic import TEMP_PREFIX, fsync_dir, make_dirs, write_atomic
from sergas_guard.recovery.chunking import Chunker, ChunkerParams
from sergas_guard.recovery.crypto import (
    AesGcmSealer,
    ChecksumSealer,
    KdfParams,
    RepositoryKeys,
    Sealer,
    chunk_id,
    unwrap_keys,
    wrap_keys,
)
from sergas_guard.recovery.index import ChunkIndex, ChunkLocation, decode_fragment, encode_fragment
from sergas_guard.recovery.lock import hold_lock
from sergas_guard.recovery.maintenance import GcReport, VerifyReport
from sergas_guard.recovery.manifest_file import (
    ManifestWriter,
    StoredHeader,
    read_stored_entries,
    read_stored_header,
)
from sergas_guard.recovery.packs import PackEntry, decode_blob, read_header
from sergas_guard.recovery.writer import ChunkRef, ChunkWriter

__all__ = ["ChunkRef", "ChunkWriter", "GcReport", "Repository", "VerifyReport"]

FORMAT_VERSION = 1
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BACKUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Repository:
    """A backup repository on a local filesystem; see the module docstring for the format."""

    def __init__(self, path: Path, config: dict[str, Any], keys: RepositoryKeys) -> None:
        """Use :meth:`init` or :meth:`open`."""
        self.path = path
        self.repository_id = str(config["id"])
        self.encrypted = bool(config["encrypted"])
        self.compression_level = int(config["compression_level"])
        self.pack_size = int(config["pack_size"])
        self._keys = keys
        self._sealer: Sealer = (
            AesGcmSealer(keys.data_key) if self.encrypted else ChecksumSealer(keys.mac_key)
        )
        self._chunker = Chunker(ChunkerParams(**config["chunker"]), keys.chunker_seed)
        self._index = ChunkIndex()
        self._fragments: set[str] = set()
        self._damaged_fragments: set[str] = set()
        self._orphans: set[str] = set()
        self._missing: dict[str, list[PackEntry]] = {}
        self._mutex = threading.RLock()
        self._held = threading.local()
        self._refresh()

    def __repr__(self) -> str:
        return f"Repository({str(self.path)!r}, encrypted={self.encrypted})"

    # -- creation and opening -------------------------------------------------

    @staticmethod
    def is_repository(path: Path) -> bool:
        """True when ``path`` holds a repository's ``config``."""
        return (Path(path) / "config").is_file()

    @classmethod
    def init(
        cls,
        path: Path,
        *,
        passphrase: Callable[[], str] | None,
        compression_level: int = 3,
        chunker: ChunkerParams | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        kdf: KdfParams | None = None,
    ) -> Repository:
        """Create a repository at ``path`` (missing, or a directory holding nothing named
        as the layout; other files there are left alone) and open it.

        ``passphrase`` None creates an unencrypted repository. Raises BackupError when
        ``path`` is not empty or the passphrase source fails, ConfigurationError for an
        invalid compression level or pack size.
        """
        if not 1 <= compression_level <= 22:
            raise ConfigurationError(
                "compression_level must be within 1..22", field="compression_level"
            )
        if pack_size < 1024:
            raise ConfigurationError("pack_size must be at least 1024 bytes", field="pack_size")
        path = Path(path)
        if path.exists() and not _free_for_init(path):
            raise BackupError(
                f"cannot create a repository at {path}: not a directory, or it already holds "
                "a repository (or files named as its layout: config, data, index, keys, locks, "
                "snapshots)"
            )
        keys = RepositoryKeys.generate()
        params = chunker or ChunkerParams()
        config: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "id": secrets.token_hex(16),
            "encrypted": passphrase is not None,
            "compression": "zstd",
            "compression_level": compression_level,
            "chunker": {
                "avg_size": params.avg_size,
                "min_size": params.min_size,
                "max_size": params.max_size,
            },
            "pack_size": pack_size,
        }
        key_file = wrap_keys(keys, passphrase(), kdf) if passphrase is not None else None
        if key_file is None:
            config["keys"] = keys.to_json()
        make_dirs(path)
        for sub in ("keys", "index", "snapshots", "locks", "data"):
            (path / sub).mkdir(exist_ok=True)
        for i in range(256):
            (path / "data" / f"{i:02x}").mkdir(exist_ok=True)
        fsync_dir(path / "data")
        fsync_dir(path)
        if key_file is not None:
            write_atomic(path / "keys" / config["id"], key_file)
        # config last: its presence is what makes the directory a repository.
        write_atomic(path / "config", json.dumps(config, indent=2).encode("utf-8"), mode=0o644)
        return cls(path, config, keys)

    @classmethod
    def open(cls, path: Path, *, passphrase: Callable[[], str] | None = None) -> Repository:
        """Open the repository at ``path``.

        Raises BackupError when there is none, it has an unknown version, a passphrase is
        missing for an encrypted repository or given for an unencrypted one, or the
        passphrase is wrong ("wrong passphrase ...").
        """
        path = Path(path)
        try:
            config = json.loads((path / "config").read_bytes())
            version = config["version"]
        except FileNotFoundError:
            raise BackupError(f"no backup repository at {path}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"the repository config at {path} is unreadable ({exc!r})") from None
        if version != FORMAT_VERSION:
            raise BackupError(f"repository format version {version!r} is not supported")
        if not config.get("encrypted", True):
            if passphrase is not None:
                raise BackupError(f"the repository at {path} is not encrypted; no passphrase")
            keys = RepositoryKeys.from_json(config.get("keys", {}))
        else:
            if passphrase is None:
                raise BackupError(f"the repository at {path} is encrypted: a passphrase is needed")
            try:
                key_file = (path / "keys" / str(config.get("id"))).read_bytes()
            except OSError:
                raise BackupError(f"the repository at {path} has no key file") from None
            keys = unwrap_keys(key_file, passphrase())
        try:
            return cls(path, config, keys)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"the repository config at {path} is malformed ({exc!r})") from None

    @property
    def orphan_packs(self) -> frozenset[str]:
        """Packs no index fragment names: written by a backup killed before its flush (or
        one running now). Their chunks are re-used like any other; the next collection
        indexes or removes them."""
        with self._mutex:
            return frozenset(self._orphans)

    def change_passphrase(
        self, passphrase: Callable[[], str], *, kdf: KdfParams | None = None
    ) -> None:
        """Re-wrap the repository's keys under a new passphrase (atomically: the old one
        works until the new key file is in place). Data is not re-encrypted.

        Raises BackupError for an unencrypted repository or a failing passphrase source.
        """
        if not self.encrypted:
            raise BackupError("the repository is not encrypted; it has no passphrase")
        key_file = wrap_keys(self._keys, passphrase(), kdf)
        write_atomic(self.path / "keys" / self.repository_id, key_file)

    # -- locking ---------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold the repository lock: shared for backups and restores, exclusive for
        garbage collection. Re-entrant in one thread (an exclusive holder may take it
        shared). Acquiring it refreshes the in-memory index, so a collection that ran
        meanwhile is seen. Raises BackupError on timeout, or when a thread holding it
        shared asks for it exclusive (that would deadlock). A thread waiting for the
        exclusive lock while another thread of the process holds it waits for that one.
        """
        held: str | None = getattr(self._held, "mode", None)
        if held == "exclusive" or (held == "shared" and not exclusive):
            yield
            return
        if held == "shared":
            raise BackupError("cannot take the exclusive repository lock while holding it shared")
        with hold_lock(self.path / "locks", exclusive=exclusive, timeout=timeout):
            self._held.mode = "exclusive" if exclusive else "shared"
            try:
                # Whatever ran before we got the lock (a collection) is visible now.
                self._refresh()
                yield
            finally:
                self._held.mode = None

    # -- chunks ----------------------------------------------------------------

    def chunks_of(self, stream: BinaryIO) -> Iterator[bytes]:
        """The content-defined chunks of ``stream`` (~1 MiB, per-repository boundaries)."""
        return self._chunker.chunks(stream)

    def chunk_id(self, data: bytes) -> str:
        """The id ``data`` has (or would have) in this repository."""
        return chunk_id(self._keys.mac_key, data)

    def writer(self) -> ChunkWriter:
        """A writer adding chunks; use it as a context manager (flushes on exit)."""
        return ChunkWriter(self)

    def has_chunk(self, chunk_id: str) -> bool:
        """True when a chunk with this id is stored."""
        with self._mutex:
            return chunk_id in self._index

    def read_chunk(self, ref: ChunkRef | str) -> bytes:
        """The plaintext of a stored chunk.

        Raises IntegrityError when the chunk is missing, its pack is gone or damaged, or
        its contents do not match its id.
        """
        cid = ref.id if isinstance(ref, ChunkRef) else ref
        return self._read_location(self.locate(cid))

    def locate(self, chunk_id: str) -> ChunkLocation:
        """Where the chunk ``chunk_id`` is stored.

        Raises IntegrityError when it is not in the repository.
        """
        with self._mutex:
            location = self._index.get(chunk_id)
        if location is None:
            raise IntegrityError(f"chunk {chunk_id} is not in the repository")
        return location

    def read_run(self, pack_id: str, blobs: Sequence[PackEntry]) -> list[bytes | IntegrityError]:
        """The plaintexts of ``blobs``, adjacent blobs of the pack ``pack_id`` in pack
        order, read with one ``pread``: one result per blob, the plaintext or the
        IntegrityError saying why that blob is unusable (so one damaged blob does not
        condemn its neighbours). Safe to call from several threads at once.

        Raises IntegrityError when the pack is missing or shorter than ``blobs`` say,
        ValueError when ``blobs`` is empty or not adjacent.
        """
        if not blobs:
            raise ValueError("read_run needs at least one blob")
        start = blobs[0].offset
        end = start
        for blob in blobs:
            if blob.offset != end:
                raise ValueError("read_run needs adjacent blobs in pack order")
            end += blob.length
        try:
            with open(self._pack_path(pack_id), "rb") as pack:
                data = os.pread(pack.fileno(), end - start, start)
        except FileNotFoundError:
            raise IntegrityError(
                f"pack {pack_id} holding chunk {blobs[0].chunk_id} is missing"
            ) from None
        view = memoryview(data)
        results: list[bytes | IntegrityError] = []
        for blob in blobs:
            at = blob.offset - start
            try:
                # A short read leaves a short blob: decode_blob reports it truncated.
                raw = view[at : at + blob.length]
                results.append(decode_blob(self._sealer, self._keys.mac_key, blob, raw))
            except IntegrityError as exc:
                results.append(exc)
        return results

    def _pack_path(self, pack_id: str) -> Path:
        return self.path / "data" / pack_id[:2] / pack_id

    def _read_location(self, location: ChunkLocation) -> bytes:
        entry = location.entry
        try:
            with open(self._pack_path(location.pack_id), "rb") as pack:
                blob = os.pread(pack.fileno(), entry.length, entry.offset)
        except FileNotFoundError:
            raise IntegrityError(
                f"pack {location.pack_id} holding chunk {entry.chunk_id} is missing"
            ) from None
        return decode_blob(self._sealer, self._keys.mac_key, entry, blob)

    # -- index -----------------------------------------------------------------

    def _forget(self) -> None:
        self._index = ChunkIndex()
        self._fragments = set()
        self._damaged_fragments = set()
        self._orphans = set()
        self._missing = {}

    def _refresh(self, *, retried: bool = False) -> None:
        """Load index fragments and pack tables written since the last refresh; start over
        when a fragment disappeared (garbage collection rewrote the index).

        A damaged fragment is skipped (``verify`` reports it, ``collect_garbage`` replaces
        it): the tables of the packs it named are read from the packs themselves. A pack
        an index names but the disk lacks is left out, so the next backup stores its
        chunks again instead of deduplicating against data that is gone.
        """
        with self._mutex:
            # Fragments before packs: a writer stores a pack before the fragment naming it.
            names = {p.name for p in (self.path / "index").iterdir() if _HEX64.fullmatch(p.name)}
            if not self._fragments <= names:
                self._forget()
            loaded: dict[str, list[PackEntry]] = {}
            for name in sorted(names - self._fragments):
                try:
                    blob = (self.path / "index" / name).read_bytes()
                    loaded.update(decode_fragment(self._sealer, blob))
                except FileNotFoundError:
                    continue
                except IntegrityError:
                    self._damaged_fragments.add(name)
                self._fragments.add(name)
            on_disk = dict(self._pack_files())
            if not retried and any(p not in on_disk for p in self._index.packs):
                # A collection removed packs we had seen (say as orphans) since we
                # loaded them: never deduplicate against those; start over once.
                self._forget()
                self._refresh(retried=True)
                return
            for pack_id, entries in loaded.items():
                if pack_id in on_disk:
                    self._index.add_pack(pack_id, entries)
                    self._orphans.discard(pack_id)
                elif pack_id not in self._index.packs:
                    self._missing[pack_id] = entries
            for pack_id, pack in on_disk.items():
                if pack_id in self._index.packs:
                    continue
                try:
                    entries = read_header(pack, self._sealer)
                except (FileNotFoundError, IntegrityError):
                    # Not a complete pack of ours: verify reports it, gc removes it.
                    continue
                self._index.add_pack(pack_id, entries)
                self._orphans.add(pack_id)

    def _reset_index(self) -> None:
        with self._mutex:
            self._forget()
            self._refresh()

    def _pack_files(self) -> Iterator[tuple[str, Path]]:
        for sub in sorted((self.path / "data").iterdir()):
            if not sub.is_dir():
                continue
            for pack in sorted(sub.iterdir()):
                if _HEX64.fullmatch(pack.name):
                    yield pack.name, pack

    def _add_pack(self, pack_id: str, content: list[bytes], entries: list[PackEntry]) -> None:
        write_atomic(self._pack_path(pack_id), content)
        with self._mutex:
            self._index.add_pack(pack_id, entries)

    def _write_fragment(self, packs: dict[str, list[PackEntry]]) -> str:
        blob = encode_fragment(self._sealer, packs)
        name = _sha256_hex(blob)
        write_atomic(self.path / "index" / name, blob)
        with self._mutex:
            self._fragments.add(name)
        return name

    # -- manifests -------------------------------------------------------------

    def _manifest_path(self, backup_id: str) -> Path:
        if not _BACKUP_ID.fullmatch(backup_id):
            raise BackupNotFoundError(f"{backup_id!r} is not a valid backup id")
        return self.path / "snapshots" / backup_id

    def manifest_writer(self, backup_id: str) -> ManifestWriter:
        """A writer streaming the manifest of ``backup_id`` to a temporary file; its
        ``commit(header)`` puts it in place (see ``manifest_file``). Use it as a context
        manager, and commit only after the chunks its entries name are flushed.

        Raises BackupNotFoundError for an invalid id (letters, digits, ``._-``, at most
        128), OSError when the temporary file cannot be created.
        """
        return ManifestWriter(
            self._manifest_path(backup_id), backup_id, self._sealer, self.compression_level
        )

    def write_manifest(self, backup_id: str, manifest: dict[str, Any]) -> None:
        """Store ``manifest`` (JSON-serialisable; its ``entries`` list streamed into
        segments, the rest as the header) atomically, sealed, as ``backup_id``.

        Write it only after the chunks it names are flushed. Raises BackupNotFoundError
        for an invalid id, BackupError when the manifest is not JSON-serialisable or its
        ``entries`` is not a list.
        """
        header = dict(manifest)
        entries = header.pop("entries", [])
        if not isinstance(entries, list):
            raise BackupError(f"the entries of manifest {backup_id} are not a list")
        with self.manifest_writer(backup_id) as writer:
            for entry in entries:
                writer.add(entry)
            writer.commit(header)

    def read_manifest_header(self, backup_id: str) -> StoredHeader:
        """The header of the manifest stored as ``backup_id``, without its entries.

        Raises BackupNotFoundError when there is none, IntegrityError when it is damaged
        or was stored under another id.
        """
        return read_stored_header(self._manifest_path(backup_id), self._sealer, backup_id)

    def manifest_entries(self, backup_id: str) -> Iterator[Any]:
        """The entries of the manifest stored as ``backup_id``, read one segment at a
        time (JSON values, unchecked: ``manifest.parse_entry`` checks them).

        Raises (while iterating) BackupNotFoundError when there is none, IntegrityError
        naming the backup when a segment is damaged, missing or out of place.
        """
        return read_stored_entries(self._manifest_path(backup_id), self._sealer, backup_id)

    def read_manifest(self, backup_id: str) -> dict[str, Any]:
        """The whole manifest stored as ``backup_id``: its header with every entry in
        ``entries`` (all in memory: for tools and tests; backups, restores and checks
        stream with :meth:`read_manifest_header` and :meth:`manifest_entries`).

        Raises BackupNotFoundError when there is none, IntegrityError when it is damaged
        or was stored under another id.
        """
        header = self.read_manifest_header(backup_id)
        return {**header.document, "entries": list(self.manifest_entries(backup_id))}

    def manifest_ids(self) -> list[str]:
        """The ids of every stored manifest, sorted."""
        return sorted(
            p.name for p in (self.path / "snapshots").iterdir() if _BACKUP_ID.fullmatch(p.name)
        )

    def delete_manifest(self, backup_id: str) -> None:
        """Remove a manifest and its verification record (its chunks stay until
        ``collect_garbage``).

        Raises BackupNotFoundError when there is none.
        """
        path = self._manifest_path(backup_id)
        if not path.exists():
            raise BackupNotFoundError(f"no backup {backup_id}")
        # The record goes first: a kill in between leaves an unmarked backup, never a
        # mark that outlives its backup (and that a later backup id could inherit).
        maintenance.clear_verified(self, backup_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise BackupNotFoundError(f"no backup {backup_id}") from None
        fsync_dir(path.parent)

    # -- verification and garbage collection ------------------------------------

    def verify(self, *, read_data_fraction: float = 0.0, seed: int | None = None) -> VerifyReport:
        """Check the repository: every pack's table agrees with the index, every manifest
        is readable and every chunk it names is stored; with ``read_data_fraction`` > 0,
        that fraction of packs (at least one when there are any) is read in full: its
        hash, every blob's seal, decompression and id. Never raises for damage found:
        the report lists it with the backups and files it affects.
        """
        with self.lock():
            self._refresh()
            return maintenance.verify_repository(self, read_data_fraction, random.Random(seed))

    def collect_garbage(self, *, dry_run: bool = False, timeout: float | None = None) -> GcReport:
        """Remove chunks no manifest names, under the exclusive lock (so never chunks of a
        backup in progress); rewrite packs that hold both, remove temporary files.

        Raises BackupError (and removes nothing) when a manifest cannot be read, or the
        lock is not obtained within ``timeout`` seconds.
        """
        with self.lock(exclusive=True, timeout=timeout):
            self._refresh()
            return maintenance.collect_garbage(self, dry_run=dry_run)


_SKELETON = frozenset({"keys", "index", "snapshots", "locks", "data"})
_LAYOUT = _SKELETON | {"config"}


def _free_for_init(path: Path) -> bool:
    """True when ``init`` may lay a repository out in ``path``: a directory none of whose
    entries bears a name of the layout, except the empty skeleton and temporary files an
    ``init`` killed before writing ``config`` left behind (init may start over).

    Other entries are left alone: ``BackupManager(Path("/var/backups"))``, as the seed
    writes it, must work where Debian's dpkg already keeps files in that directory.
    """
    if not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.name.startswith(TEMP_PREFIX) or entry.name not in _LAYOUT:
            continue
        if entry.name not in _SKELETON or not entry.is_dir() or entry.is_symlink():
            return False  # a config, or a file or link where the layout has a directory
        inside = list(entry.iterdir())
        if entry.name == "data":
            inside = [p for sub in inside if sub.is_dir() for p in sub.iterdir()]
        if entry.name != "keys" and any(not p.name.startswith(TEMP_PREFIX) for p in inside):
            return False
    return True


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
