"""Whole-repository operations: ``verify`` and ``collect_garbage``, and the record of
which backups a verification found sound.

Both run under the repository lock that :class:`Repository` takes for them; they read
its index and files through its private helpers (one format, one home: the repository).

A verification writes ``verified/<backup id>`` (sealed JSON ``{"verified_at",
"read_data_fraction"}``, aad ``verified:<id>``, written atomically) for each backup it
found no problem affecting, and removes it for each backup it found damaged, so
retention's "keep the newest verified backup" means what it says. A record is only
believed while its manifest exists; garbage collection removes records without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sergas_guard.errors import BackupError, IntegrityError, UnsafeRestoreError
from sergas_guard.recovery.atomic import TEMP_PREFIX, fsync_dir, make_dirs, write_atomic
from sergas_guard.recovery.index import ChunkIndex
from sergas_guard.recovery.packs import PackBuilder, PackEntry, decode_blob, read_header
from sergas_guard.recovery.restore_target import split_relpath

if TYPE_CHECKING:
    from sergas_guard.recovery.repository import Repository

__all__ = [
    "VERIFIED_DIR",
    "GcReport",
    "Verification",
    "VerifyReport",
    "clear_verified",
    "collect_garbage",
    "entry_chunks",
    "read_verified",
    "record_verified",
    "verify_repository",
]

logger = logging.getLogger(__name__)

_SHOWN_PATHS = 5
#: The directory (beside ``snapshots/``) of the verification records.
VERIFIED_DIR = "verified"


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found. ``affected`` maps backup id → paths whose data is damaged
    or missing (``"<manifest>"`` when the manifest itself is unreadable)."""

    ok: bool
    problems: tuple[str, ...]
    packs_checked: int
    packs_read: int
    chunks_read: int
    damaged_chunks: frozenset[str] = frozenset()
    affected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Every backup whose manifest this verification looked at.
    checked_backups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verification:
    """When a backup was last found sound, and what share of the data was read then."""

    verified_at: datetime
    read_data_fraction: float


def _verified_path(repo: Repository, backup_id: str) -> Path:
    # The manifest path check rejects ids that are not file names (BackupNotFoundError).
    return repo.path / VERIFIED_DIR / repo._manifest_path(backup_id).name


def _verified_aad(backup_id: str) -> bytes:
    # Bound to the id: a record copied onto another backup's name does not open.
    return b"verified:" + backup_id.encode("utf-8")


def record_verified(repo: Repository, backup_id: str, at: datetime, fraction: float) -> None:
    """Durably record that ``backup_id`` was found sound at ``at``.

    Raises BackupNotFoundError for an invalid id, OSError when it cannot be written.
    """
    path = _verified_path(repo, backup_id)
    make_dirs(path.parent)
    doc = {"verified_at": at.isoformat(), "read_data_fraction": fraction}
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    write_atomic(path, repo._sealer.seal(raw, _verified_aad(backup_id)))


def clear_verified(repo: Repository, backup_id: str) -> None:
    """Remove the verification record of ``backup_id`` (if any), durably.

    Raises BackupNotFoundError for an invalid id, OSError when it cannot be removed.
    """
    path = _verified_path(repo, backup_id)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def read_verified(repo: Repository, backup_id: str) -> Verification | None:
    """The last verification that found ``backup_id`` sound, or None (never verified,
    or the record is damaged: a record that does not open proves nothing)."""
    try:
        blob = _verified_path(repo, backup_id).read_bytes()
    except (FileNotFoundError, BackupError):
        return None
    try:
        doc = json.loads(repo._sealer.open(blob, _verified_aad(backup_id)))
        at = datetime.fromisoformat(doc["verified_at"])
        fraction = float(doc["read_data_fraction"])
    except (IntegrityError, ValueError, KeyError, TypeError):
        logger.warning("the verification record of backup %s is damaged; ignored", backup_id)
        return None
    if at.tzinfo is None:
        return None
    return Verification(verified_at=at, read_data_fraction=fraction)


@dataclass(frozen=True)
class GcReport:
    """What ``collect_garbage`` removed (or would remove, with ``dry_run``)."""

    dry_run: bool
    referenced_chunks: int
    chunks_removed: int
    packs_deleted: int
    packs_rewritten: int
    bytes_freed: int
    temp_files_removed: int


def entry_chunks(entry: object) -> tuple[str, list[str]]:
    """(path, chunk ids) of one manifest entry as stored (its ``chunks``; none when the
    entry is not an object or has none)."""
    if not isinstance(entry, dict):
        return "?", []
    chunks = entry.get("chunks") or []
    path = str(entry.get("path", "?"))
    return path, [str(cid) for cid in chunks] if isinstance(chunks, list) else []


def _unsafe_reasons(entry: object) -> list[str]:
    """Why the path (and a link's target path) of a stored entry would leave a restore
    target (``..``, absolute, empty, NUL, not a string), as the restore would say it."""
    reasons: list[str] = []
    paths = [entry.get("path") if isinstance(entry, dict) else entry]
    if isinstance(entry, dict) and entry.get("type") == "hardlink":
        paths.append(entry.get("target"))
    for path in paths:
        try:
            split_relpath(path)
        except UnsafeRestoreError as exc:
            reasons.append(str(exc))
    return reasons


def _check_manifest(
    repo: Repository, backup_id: str, index: ChunkIndex, damaged: set[str]
) -> tuple[set[str], list[str]]:
    """(paths with damaged or missing data, unsafe-path reasons) of one backup, its
    entries streamed. Raises BackupError when the manifest cannot be read."""
    repo.read_manifest_header(backup_id)
    paths: set[str] = set()
    unsafe: list[str] = []
    for entry in repo.manifest_entries(backup_id):
        path, chunks = entry_chunks(entry)
        if any(cid not in index or cid in damaged for cid in chunks):
            paths.add(path)
        unsafe.extend(_unsafe_reasons(entry))
    return paths, unsafe


def verify_repository(repo: Repository, fraction: float, rng: random.Random) -> VerifyReport:
    """See :meth:`Repository.verify`; also records which backups were found sound."""
    started = datetime.now(UTC)
    with repo._mutex:
        index: ChunkIndex = repo._index
        packs = {pack_id: list(entries) for pack_id, entries in index.packs.items()}
        problems = [f"index fragment {n} is damaged" for n in sorted(repo._damaged_fragments)]
        missing = dict(repo._missing)
    damaged: set[str] = set()
    on_disk = dict(repo._pack_files())
    readable: list[str] = []

    def lose(pack_id: str, entries: Iterable[PackEntry]) -> None:
        for entry in entries:
            location = index.get(entry.chunk_id)
            if location is not None and location.pack_id == pack_id:
                damaged.add(entry.chunk_id)

    for pack_id, entries in sorted(missing.items()):
        problems.append(f"pack {pack_id} is missing ({len(entries)} chunks)")
        damaged.update(e.chunk_id for e in entries if e.chunk_id not in index)
    for pack_id, entries in sorted(packs.items()):
        if pack_id not in on_disk:
            problems.append(f"pack {pack_id} is missing ({len(entries)} chunks)")
            lose(pack_id, entries)
            continue
        try:
            table = {e.chunk_id: e for e in read_header(on_disk[pack_id], repo._sealer)}
        except IntegrityError as exc:
            problems.append(str(exc))
            lose(pack_id, entries)
            continue
        disagree = [e for e in entries if table.get(e.chunk_id) != e]
        if disagree:
            problems.append(f"pack {pack_id}: the index disagrees on {len(disagree)} chunks")
            lose(pack_id, disagree)
        readable.append(pack_id)
    for pack_id in sorted(set(on_disk) - set(packs)):
        try:
            # A backup running beside us may have stored it since our refresh.
            read_header(on_disk[pack_id], repo._sealer)
        except FileNotFoundError:
            continue
        except IntegrityError:
            problems.append(f"pack {pack_id} is unreadable (truncated or damaged) and unindexed")

    chunks_read = 0
    sample: list[str] = []
    if fraction > 0 and readable:
        count = min(len(readable), max(1, math.ceil(fraction * len(readable))))
        sample = sorted(rng.sample(readable, count))
    for pack_id in sample:
        content = on_disk[pack_id].read_bytes()
        if hashlib.sha256(content).hexdigest() != pack_id:
            problems.append(f"pack {pack_id}: its contents do not match its id")
        for entry in packs[pack_id]:
            chunks_read += 1
            try:
                blob = content[entry.offset : entry.offset + entry.length]
                decode_blob(repo._sealer, repo._keys.mac_key, entry, blob)
            except IntegrityError as exc:
                problems.append(f"pack {pack_id}: {exc}")
                lose(pack_id, [entry])

    affected: dict[str, tuple[str, ...]] = {}
    checked = repo.manifest_ids()
    for backup_id in checked:
        try:
            paths, unsafe = _check_manifest(repo, backup_id, index, damaged)
        except BackupError as exc:
            problems.append(str(exc))
            affected[backup_id] = ("<manifest>",)
            continue
        if paths:
            shown = ", ".join(sorted(paths)[:_SHOWN_PATHS])
            more = f" and {len(paths) - _SHOWN_PATHS} more" if len(paths) > _SHOWN_PATHS else ""
            problems.append(f"backup {backup_id}: damaged or missing data in {shown}{more}")
        for reason in unsafe[:_SHOWN_PATHS]:
            problems.append(f"backup {backup_id}: {reason}")
        if len(unsafe) > _SHOWN_PATHS:
            problems.append(f"backup {backup_id}: {len(unsafe) - _SHOWN_PATHS} more unsafe paths")
        if unsafe:
            # A restore refuses such a manifest, so the backup is not sound.
            paths.add("<unsafe paths>")
        if paths:
            affected[backup_id] = tuple(sorted(paths))
    _record(repo, checked, affected, started, fraction)
    return VerifyReport(
        ok=not problems,
        problems=tuple(problems),
        packs_checked=len(packs),
        packs_read=len(sample),
        chunks_read=chunks_read,
        damaged_chunks=frozenset(damaged),
        affected=affected,
        checked_backups=tuple(checked),
    )


def _record(
    repo: Repository,
    checked: Iterable[str],
    affected: dict[str, tuple[str, ...]],
    started: datetime,
    fraction: float,
) -> None:
    # Damage clears the mark before anything is marked, so a failure part-way never
    # leaves a damaged backup marked. Failing to write a record loses only the mark.
    ordered = sorted(checked, key=lambda b: b not in affected)
    for backup_id in ordered:
        try:
            if backup_id in affected:
                clear_verified(repo, backup_id)
            else:
                record_verified(repo, backup_id, started, fraction)
        except OSError as exc:
            logger.warning("cannot record the verification of backup %s: %s", backup_id, exc)


def _temp_files(root: Path) -> list[Path]:
    dirs = [root, root / "keys", root / "index", root / "snapshots"]
    if (root / VERIFIED_DIR).is_dir():
        dirs.append(root / VERIFIED_DIR)
    dirs += [d for d in sorted((root / "data").iterdir()) if d.is_dir()]
    return [f for d in dirs for f in d.iterdir() if f.name.startswith(TEMP_PREFIX)]


def collect_garbage(repo: Repository, *, dry_run: bool) -> GcReport:
    """See :meth:`Repository.collect_garbage`; the caller holds the exclusive lock."""
    referenced: set[str] = set()
    for backup_id in repo.manifest_ids():
        try:
            repo.read_manifest_header(backup_id)
            for entry in repo.manifest_entries(backup_id):
                referenced.update(entry_chunks(entry)[1])
        except BackupError as exc:
            # Deleting on a guess could destroy a backup: stop instead.
            raise BackupError(f"garbage collection stopped, nothing removed: {exc}") from None

    index: ChunkIndex = repo._index
    on_disk = dict(repo._pack_files())
    keep: dict[str, list[PackEntry]] = {}
    rewrite: dict[str, list[PackEntry]] = {}
    delete: list[str] = [p for p in on_disk if p not in index.packs]
    removed: set[str] = set()
    for pack_id, entries in index.packs.items():
        if pack_id not in on_disk:
            continue
        live = []
        for entry in entries:
            location = index.get(entry.chunk_id)
            if entry.chunk_id in referenced and location and location.pack_id == pack_id:
                live.append(entry)
            elif entry.chunk_id not in referenced:
                removed.add(entry.chunk_id)
        if len(live) == len(entries):
            keep[pack_id] = entries
        elif live:
            rewrite[pack_id] = live
        else:
            delete.append(pack_id)
    temps = _temp_files(repo.path)
    old_bytes = sum(on_disk[p].stat().st_size for p in [*delete, *rewrite])
    report = dict(
        referenced_chunks=sum(1 for cid in referenced if cid in index),
        chunks_removed=len(removed),
        packs_deleted=len(delete),
        packs_rewritten=len(rewrite),
        temp_files_removed=len(temps),
    )
    if dry_run:
        return GcReport(dry_run=True, bytes_freed=old_bytes, **report)

    new_bytes = 0
    # Damaged fragments, missing packs and packs only their own tables name: a new index.
    if delete or rewrite or repo._damaged_fragments or repo._orphans or repo._missing:
        builder = PackBuilder()
        new_packs: dict[str, list[PackEntry]] = {}

        def write_pack() -> None:
            nonlocal builder, new_bytes
            pack_id, content, entries = builder.finish(repo._sealer)
            repo._add_pack(pack_id, content, entries)
            new_packs[pack_id] = entries
            new_bytes += sum(len(part) for part in content)
            builder = PackBuilder()

        for pack_id, live in sorted(rewrite.items()):
            content = on_disk[pack_id].read_bytes()
            for entry in live:
                # Sealed blobs are bound to their chunk id, not their pack: copy as is.
                blob = content[entry.offset : entry.offset + entry.length]
                try:
                    decode_blob(repo._sealer, repo._keys.mac_key, entry, blob)
                except IntegrityError as exc:
                    # Copying would hide the damage in a fresh pack; removing it would
                    # destroy what a backup names. Stop and let verify tell which.
                    raise IntegrityError(
                        f"garbage collection stopped, nothing removed: pack {pack_id}: {exc}"
                    ) from None
                builder.add(entry.chunk_id, blob, entry.size)
                if builder.size >= repo.pack_size:
                    write_pack()
        if len(builder):
            write_pack()
        # New packs → one index naming every live pack → old fragments → old packs: a
        # kill between any two steps leaves every referenced chunk findable.
        old_fragments = set(repo._fragments)
        new_fragment = repo._write_fragment({**keep, **new_packs})
        for name in sorted(old_fragments - {new_fragment}):
            with contextlib.suppress(FileNotFoundError):
                (repo.path / "index" / name).unlink()
        fsync_dir(repo.path / "index")
        for pack_id in [*delete, *rewrite]:
            with contextlib.suppress(FileNotFoundError):
                on_disk[pack_id].unlink()
        for sub in {on_disk[p].parent for p in [*delete, *rewrite]}:
            fsync_dir(sub)
        repo._reset_index()
    for temp in temps:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _remove_stale_records(repo)
    return GcReport(dry_run=False, bytes_freed=old_bytes - new_bytes, **report)


def _remove_stale_records(repo: Repository) -> None:
    """Remove verification records whose backup is gone (removed through
    ``Repository.delete_manifest``, which leaves the record, or verified while a
    cleanup removed it)."""
    directory = repo.path / VERIFIED_DIR
    if not directory.is_dir():
        return
    live = set(repo.manifest_ids())
    stale = [p for p in directory.iterdir() if p.name not in live and not p.name.startswith(".")]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if stale:
        fsync_dir(directory)
