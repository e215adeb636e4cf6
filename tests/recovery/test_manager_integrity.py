"""Encrypted repositories, corrupt data and large files, through the manager."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from sergas_guard.errors import BackupError, IntegrityError
from sergas_guard.recovery import BackupManager
from tests.recovery.conftest import tree_state

PASSPHRASE = "correct horse battery staple"


def _pack_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


async def test_an_encrypted_repository_needs_its_passphrase(
    source_tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    backup = await manager.create_backup("n", source_tree)
    expected = await asyncio.to_thread(tree_state, source_tree)
    packs = await asyncio.to_thread(_pack_files, repo)
    assert packs
    for pack in packs:  # no plaintext of the tree in the repository
        assert b"port = 8080" not in pack.read_bytes()

    fresh = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    assert await fresh.restore_backup(backup.backup_id, tmp_path / "out")
    assert await asyncio.to_thread(tree_state, tmp_path / "out") == expected

    with pytest.raises(BackupError) as info:
        BackupManager(repo, passphrase=lambda: "wrong").list_backups()
    assert "passphrase" in str(info.value)
    assert PASSPHRASE not in str(info.value)
    assert PASSPHRASE not in caplog.text
    assert PASSPHRASE not in repr(manager)


async def test_a_flipped_byte_is_reported_and_never_restored(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(random.Random(7).randbytes(300_000))
    repo = tmp_path / "repo"
    manager = BackupManager(repo)
    backup = await manager.create_backup("n", source)
    [pack] = await asyncio.to_thread(_pack_files, repo)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    with pytest.raises(IntegrityError):
        await manager.restore_backup(backup.backup_id, tmp_path / "out")
    assert not (tmp_path / "out" / "data.bin").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []
    report = await manager.verify(read_data_fraction=1.0)
    assert not report.ok
    assert any(backup.backup_id in problem for problem in report.problems)


async def test_a_large_sparse_file_is_streamed_in_chunks(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    big = source / "sparse.img"
    with big.open("wb") as handle:  # 40 MiB, mostly a hole, some data near the start
        handle.seek(1 << 20)
        handle.write(random.Random(1).randbytes(3 << 20))
        handle.truncate(40 << 20)
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    manifest = await asyncio.to_thread(manager._load, backup.backup_id)
    [entry] = manifest.entries
    assert entry.size == 40 << 20
    assert len(entry.chunks) > 3
    # the long zero run is cut into equal maximal chunks, stored once
    assert len(set(entry.chunks)) < len(entry.chunks)
    assert backup.stored_bytes < entry.size
    await manager.restore_backup(backup.backup_id, tmp_path / "out")
    restored = tmp_path / "out" / "sparse.img"
    assert restored.stat().st_size == 40 << 20
    assert await asyncio.to_thread(_same_content, big, restored)


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(1 << 20), right.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


async def test_a_single_file_source_restores_under_its_name(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    source.write_bytes(b"x" * 1000)
    os.chmod(source, 0o640)
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    await manager.restore_backup(backup.backup_id, tmp_path / "out")
    restored = tmp_path / "out" / "app.db"
    assert restored.read_bytes() == b"x" * 1000
    assert restored.stat().st_mode & 0o777 == 0o640
