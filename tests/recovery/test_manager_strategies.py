"""Strategies other than the filesystem's through the manager, and hostile manifests."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sergas_guard.errors import BackupError, IntegrityError, UnsafeRestoreError
from sergas_guard.recovery import BackupManager, BackupType, SQLiteBackupStrategy
from sergas_guard.recovery.manifest import parse_manifest


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        rows: list[tuple[int, str]] = db.execute(
            "SELECT id, note FROM notes ORDER BY id"
        ).fetchall()
    db.close()
    return rows


def _write(path: Path, notes: list[str]) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, note TEXT)")
        db.executemany("INSERT INTO notes (note) VALUES (?)", [(n,) for n in notes])
    db.close()


async def test_a_sqlite_chain_restores_each_database_state(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    await asyncio.to_thread(_write, database, ["first", "second"])
    manager = BackupManager(tmp_path / "repo")
    manager.register_strategy("sqlite", SQLiteBackupStrategy(compress=True))
    full = await manager.create_backup("db", database, strategy="sqlite")
    await asyncio.to_thread(_write, database, ["third"] * 1000)
    incr = await manager.create_backup(
        "db", database, backup_type=BackupType.INCREMENTAL, strategy="sqlite"
    )
    assert incr.parent_id == full.backup_id
    assert incr.strategy == "sqlite"

    await manager.restore_backup(full.backup_id, tmp_path / "old.db")
    await manager.restore_backup(incr.backup_id, tmp_path / "new.db")
    assert await asyncio.to_thread(_rows, tmp_path / "old.db") == [(1, "first"), (2, "second")]
    assert len(await asyncio.to_thread(_rows, tmp_path / "new.db")) == 1002


async def test_restoring_needs_the_backups_strategy(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    await asyncio.to_thread(_write, database, ["x"])
    manager = BackupManager(tmp_path / "repo")
    manager.register_strategy("sqlite", SQLiteBackupStrategy())
    backup = await manager.create_backup("db", database, strategy="sqlite")
    with pytest.raises(BackupError, match="not registered"):
        await BackupManager(tmp_path / "repo").restore_backup(backup.backup_id, tmp_path / "r")


def _forge(manager: BackupManager, backup_id: str, entries: list[dict[str, Any]]) -> None:
    """Write a hostile manifest straight into the repository (as an attacker with write
    access to it, or a corrupted disk, could)."""
    now = datetime.now(UTC).isoformat()
    repo = manager._open(create=False)
    repo.write_manifest(
        backup_id,
        {
            "version": 1,
            "backup_id": backup_id,
            "name": "evil",
            "type": "full",
            "strategy": "filesystem",
            "kind": "filesystem",
            "source": "/x",
            "parent_id": None,
            "chain_root_id": backup_id,
            "created_at": now,
            "completed_at": now,
            "retention_days": None,
            "stats": {},
            "entries": entries,
        },
    )


@pytest.mark.parametrize(
    "entries",
    [
        [{"path": "../escaped.txt", "type": "file", "mode": 0o644, "mtime_ns": 0}],
        [{"path": "/tmp/escaped.txt", "type": "file", "mode": 0o644, "mtime_ns": 0}],
        [
            {"path": "sub", "type": "symlink", "mode": 0o777, "mtime_ns": 0, "target": ".."},
            {"path": "sub/escaped.txt", "type": "file", "mode": 0o644, "mtime_ns": 0},
        ],
    ],
)
async def test_a_hostile_manifest_never_writes_outside_the_target(
    source_tree: Path, tmp_path: Path, entries: list[dict[str, Any]]
) -> None:
    manager = BackupManager(tmp_path / "repo")
    honest = await manager.create_backup("n", source_tree)
    some_file = next(
        e
        for e in (await asyncio.to_thread(manager._load, honest.backup_id)).entries
        if e.type == "file"
    )
    for entry in entries:
        if entry["type"] == "file":
            entry.update(
                chunks=list(some_file.chunks), sha256=some_file.sha256, size=some_file.size
            )
    await asyncio.to_thread(_forge, manager, "backup_evil", entries)
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeRestoreError):
        await manager.restore_backup("backup_evil", target)
    assert not await asyncio.to_thread(os.path.lexists, tmp_path / "deep" / "escaped.txt")
    assert not await asyncio.to_thread(os.path.lexists, "/tmp/escaped.txt")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(version=3),
        lambda d: d.update(backup_id="other"),
        lambda d: d.update(type="weekly"),
        lambda d: d.update(entries="all of them"),
        lambda d: d["entries"].append({"path": "x", "type": "fifo", "mode": 0, "mtime_ns": 0}),
        lambda d: d["entries"].append({"path": "x", "type": "file", "mode": True, "mtime_ns": 0}),
        lambda d: d.update(created_at="2025-01-01T00:00:00"),
        lambda d: d.pop("name"),
    ],
)
async def test_malformed_manifests_are_integrity_errors(
    source_tree: Path, tmp_path: Path, mutate: Any
) -> None:
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source_tree)
    document = manager._open(create=False).read_manifest(backup.backup_id)
    parse_manifest(document, backup_id=backup.backup_id)  # intact: fine
    mutate(document)
    with pytest.raises(IntegrityError, match="malformed"):
        parse_manifest(document, backup_id=backup.backup_id)
