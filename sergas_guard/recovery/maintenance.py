"""Whole-repository operations: ``verify`` and ``collect_garbage``.

Both run under the repository lock that :class:`Repository` takes for them; they read
its index and files through its private helpers (one format, one home: the repository).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sergas_guard.errors import BackupError, IntegrityError
from sergas_guard.recovery.atomic import TEMP_PREFIX, fsync_dir
from sergas_guard.recovery.index import ChunkIndex
from sergas_guard.recovery.packs import PackBuilder, PackEntry, decode_blob, read_header

if TYPE_CHECKING:
    from sergas_guard.recovery.repository import Repository

__all__ = ["GcReport", "VerifyReport", "collect_garbage", "manifest_chunks", "verify_repository"]

_SHOWN_PATHS = 5


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


def manifest_chunks(manifest: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(path, chunk id) for every chunk a manifest names, in its ``entries[].chunks``."""
    entries = manifest.get("entries", [])
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        chunks = entry.get("chunks") or []
        path = str(entry.get("path", "?"))
        if isinstance(chunks, list):
            for cid in chunks:
                yield path, str(cid)


def verify_repository(repo: Repository, fraction: float, rng: random.Random) -> VerifyReport:
    """See :meth:`Repository.verify`."""
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
    for backup_id in repo.manifest_ids():
        try:
            manifest = repo.read_manifest(backup_id)
        except BackupError as exc:
            problems.append(str(exc))
            affected[backup_id] = ("<manifest>",)
            continue
        paths: set[str] = set()
        for path, cid in manifest_chunks(manifest):
            if cid not in index or cid in damaged:
                paths.add(path)
        if paths:
            shown = ", ".join(sorted(paths)[:_SHOWN_PATHS])
            more = f" and {len(paths) - _SHOWN_PATHS} more" if len(paths) > _SHOWN_PATHS else ""
            problems.append(f"backup {backup_id}: damaged or missing data in {shown}{more}")
            affected[backup_id] = tuple(sorted(paths))
    return VerifyReport(
        ok=not problems,
        problems=tuple(problems),
        packs_checked=len(packs),
        packs_read=len(sample),
        chunks_read=chunks_read,
        damaged_chunks=frozenset(damaged),
        affected=affected,
    )


def _temp_files(root: Path) -> list[Path]:
    dirs = [root, root / "keys", root / "index", root / "snapshots"]
    dirs += [d for d in sorted((root / "data").iterdir()) if d.is_dir()]
    return [f for d in dirs for f in d.iterdir() if f.name.startswith(TEMP_PREFIX)]


def collect_garbage(repo: Repository, *, dry_run: bool) -> GcReport:
    """See :meth:`Repository.collect_garbage`; the caller holds the exclusive lock."""
    referenced: set[str] = set()
    for backup_id in repo.manifest_ids():
        try:
            manifest = repo.read_manifest(backup_id)
        except BackupError as exc:
            # Deleting on a guess could destroy a backup: stop instead.
            raise BackupError(f"garbage collection stopped, nothing removed: {exc}") from None
        referenced.update(cid for _, cid in manifest_chunks(manifest))

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
    return GcReport(dry_run=False, bytes_freed=old_bytes - new_bytes, **report)
