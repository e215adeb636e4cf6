"""Verification is recorded in the repository, and retention trusts only that record;
one unreadable manifest does not hide the other backups; verify flags unsafe paths."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from sergas_guard.errors import IntegrityError, UnsafeRestoreError
from sergas_guard.recovery import BackupManager
from sergas_guard.recovery.repository import Repository
from sergas_guard.recovery.retention import RetentionPolicy
from sergas_guard.recovery.types import BackupType

PASSPHRASE = "correct horse battery staple"


def _tree(root: Path, tag: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(f"alpha {tag}\n" * 50)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "b.bin").write_bytes(tag.encode() * 4096)
    return root


def _packs(repo: Path) -> set[Path]:
    return {p for p in (repo / "data").rglob("*") if p.is_file()}


async def test_a_verification_marks_each_sound_backup(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    backup = await manager.create_backup("n", _tree(tmp_path / "src", "one"))
    assert manager.list_backups()[0].verified_at is None

    report = await manager.verify(read_data_fraction=0.5)
    assert report.ok
    assert report.checked_backups == (backup.backup_id,)
    [listed] = manager.list_backups()
    assert listed.verified_at is not None
    assert backup.created_at <= listed.verified_at
    # Durable: a fresh manager (another process) sees it, and the record is sealed.
    fresh = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    assert fresh.list_backups()[0].verified_at == listed.verified_at
    record = repo / "verified" / backup.backup_id
    assert b"read_data_fraction" not in record.read_bytes()


async def test_cleanup_keeps_the_newest_verified_backup_and_its_chain(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = _tree(tmp_path / "src", "one")
    manager = BackupManager(repo)
    full = await manager.create_backup("n", source, retention_days=None)
    (source / "a.txt").write_text("changed\n")
    incremental = await manager.create_backup(
        "n", source, BackupType.INCREMENTAL, retention_days=None
    )
    assert incremental.parent_id == full.backup_id
    assert (await manager.verify()).ok
    (source / "c.txt").write_text("new\n")
    newest = await manager.create_backup("n", source, retention_days=None)

    report = await manager.cleanup(
        RetentionPolicy(keep_last=1, use_retention_days=False), confirm=True
    )
    assert report.removed == ()
    reasons = {d.backup_id: d.reasons for d in report.decisions}
    assert "the newest verified backup" in reasons[incremental.backup_id]
    assert reasons[full.backup_id]  # the parent the verified incremental needs
    assert {b.backup_id for b in manager.list_backups()} == {
        full.backup_id,
        incremental.backup_id,
        newest.backup_id,
    }
    restored = tmp_path / "out"
    assert await manager.restore_backup(incremental.backup_id, restored)
    assert (restored / "a.txt").read_text() == "changed\n"


async def test_without_a_verification_keep_last_keeps_only_the_last(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = _tree(tmp_path / "src", "one")
    manager = BackupManager(repo)
    older = await manager.create_backup("n", source, retention_days=None)
    newest = await manager.create_backup("n", source, retention_days=None)
    report = await manager.cleanup(
        RetentionPolicy(keep_last=1, use_retention_days=False), confirm=True
    )
    assert report.removed == (older.backup_id,)
    assert [b.backup_id for b in manager.list_backups()] == [newest.backup_id]


async def test_damage_found_by_a_verification_removes_the_mark(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    sound = await manager.create_backup("n", _tree(tmp_path / "one", "one"))
    before = _packs(repo)
    damaged = await manager.create_backup("n", _tree(tmp_path / "two", "two"))
    assert (await manager.verify()).ok
    assert all(b.verified_at is not None for b in manager.list_backups())

    new_packs = _packs(repo) - before
    assert new_packs
    for pack in new_packs:
        content = bytearray(pack.read_bytes())
        content[len(content) // 2] ^= 0xFF
        pack.write_bytes(bytes(content))

    report = await manager.verify(read_data_fraction=1.0)
    assert not report.ok
    assert damaged.backup_id in report.affected
    assert sound.backup_id not in report.affected
    marks = {b.backup_id: b.verified_at for b in manager.list_backups()}
    assert marks[damaged.backup_id] is None
    assert marks[sound.backup_id] is not None


async def test_a_record_copied_to_another_backup_does_not_mark_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo)
    first = await manager.create_backup("n", _tree(tmp_path / "src", "one"))
    assert (await manager.verify()).ok
    second = await manager.create_backup("n", tmp_path / "src")
    shutil.copyfile(repo / "verified" / first.backup_id, repo / "verified" / second.backup_id)
    marks = {b.backup_id: b.verified_at for b in manager.list_backups()}
    assert marks[first.backup_id] is not None
    assert marks[second.backup_id] is None


async def test_removing_a_backup_removes_its_record(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = _tree(tmp_path / "src", "one")
    manager = BackupManager(repo)
    older = await manager.create_backup("n", source, retention_days=None)
    assert (await manager.verify()).ok
    await manager.create_backup("n", source, retention_days=None)
    assert (await manager.verify()).ok  # now the newest is the newest verified one
    report = await manager.cleanup(
        RetentionPolicy(keep_last=1, use_retention_days=False), confirm=True
    )
    assert report.removed == (older.backup_id,)
    assert not (repo / "verified" / older.backup_id).exists()


async def test_one_damaged_manifest_does_not_hide_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    source = _tree(tmp_path / "src", "one")
    manager = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    first = await manager.create_backup("n", source, retention_days=None)
    bad = await manager.create_backup("n", source, retention_days=None)
    last = await manager.create_backup("n", source, retention_days=None)
    manifest = repo / "snapshots" / bad.backup_id
    content = bytearray(manifest.read_bytes())
    content[len(content) // 2] ^= 0xFF
    manifest.write_bytes(bytes(content))

    fresh = BackupManager(repo, passphrase=lambda: PASSPHRASE)
    with caplog.at_level(logging.WARNING, logger="sergas_guard.recovery.manager"):
        listed = fresh.list_backups()
    assert [b.backup_id for b in listed] == [first.backup_id, last.backup_id]
    assert list(fresh.unreadable_backups()) == [bad.backup_id]
    assert bad.backup_id in caplog.text
    assert PASSPHRASE not in caplog.text
    with pytest.raises(IntegrityError):
        await fresh.restore_backup(bad.backup_id, tmp_path / "out")
    assert await fresh.restore_backup(last.backup_id, tmp_path / "out2")

    # A confirmed cleanup cannot know what the unreadable one needs: nothing goes.
    policy = RetentionPolicy(keep_last=1, use_retention_days=False)
    dry = await fresh.cleanup(policy)
    assert {d.backup_id for d in dry.decisions} == {first.backup_id, last.backup_id}
    with pytest.raises(IntegrityError, match=bad.backup_id):
        await fresh.cleanup(policy, confirm=True)
    assert len(fresh.list_backups()) == 2

    # Once the damaged manifest is gone, the listing is whole again.
    manifest.unlink()
    assert [b.backup_id for b in fresh.list_backups()] == [first.backup_id, last.backup_id]
    assert fresh.unreadable_backups() == {}


@pytest.mark.parametrize("unsafe", ["../escape.txt", "/etc/escape.txt", "sub/a\x00b", "a//b"])
async def test_verify_flags_a_manifest_with_an_unsafe_path(tmp_path: Path, unsafe: str) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo)
    sound = await manager.create_backup("n", _tree(tmp_path / "src", "one"))
    backup = await manager.create_backup("n", tmp_path / "src")
    assert (await manager.verify()).ok
    # What a tampered (or buggy) writer could leave: a well-sealed manifest whose
    # entry would leave the restore target.
    repository = Repository.open(repo)
    doc = repository.read_manifest(backup.backup_id)
    doc["entries"][-1]["path"] = unsafe
    repository.write_manifest(backup.backup_id, doc)

    report = await BackupManager(repo).verify()
    assert not report.ok
    flagged = [p for p in report.problems if p.startswith(f"backup {backup.backup_id}: ")]
    assert flagged
    assert repr(unsafe) in flagged[0]
    assert backup.backup_id in report.affected
    assert sound.backup_id not in report.affected
    marks = {b.backup_id: b.verified_at for b in manager.list_backups()}
    assert marks[backup.backup_id] is None
    assert marks[sound.backup_id] is not None
    with pytest.raises(UnsafeRestoreError):
        await manager.restore_backup(backup.backup_id, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


async def test_garbage_collection_removes_records_without_a_backup(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    manager = BackupManager(repo)
    backup = await manager.create_backup("n", _tree(tmp_path / "src", "one"))
    assert (await manager.verify()).ok
    # A verification racing a cleanup that removes the backup could leave this.
    orphan = repo / "verified" / "backup_19990101_000000_deadbeef"
    shutil.copyfile(repo / "verified" / backup.backup_id, orphan)
    Repository.open(repo).collect_garbage()
    assert not orphan.exists()
    assert manager.list_backups()[0].verified_at is not None
