"""The seed's calls, as written, against real files."""

from __future__ import annotations

from pathlib import Path

from sergas_guard.recovery import (
    BackupManager,
    BackupProgress,
    BackupType,
    FileSystemBackupStrategy,
)
from tests.recovery.conftest import tree_state


async def test_the_seed_snippet_backs_up_and_restores_exactly(
    source_tree: Path, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    restore_path = tmp_path / "restore"
    expected = tree_state(source_tree)

    manager = BackupManager(backup_dir)
    manager.register_strategy("filesystem", FileSystemBackupStrategy(compress=True))
    metadata = await manager.create_backup(
        name="daily_backup",
        source=str(source_tree),
        backup_type=BackupType.FULL,
        strategy="filesystem",
        retention_days=30,
    )
    backups = manager.list_backups(backup_type=BackupType.FULL)
    success = await manager.restore_backup(
        backup_id=metadata.backup_id, restore_path=str(restore_path)
    )

    assert success is True
    assert [b.backup_id for b in backups] == [metadata.backup_id]
    assert metadata.backup_type is BackupType.FULL
    assert metadata.name == "daily_backup"
    assert metadata.retention_days == 30
    assert metadata.file_count == 4
    contents = [state[3] for state in expected.values() if state[0] == "file"]
    assert metadata.size_bytes == sum(len(c) for c in contents if isinstance(c, bytes))
    assert metadata.chain_root_id == metadata.backup_id
    assert metadata.parent_id is None
    assert tree_state(restore_path) == expected


async def test_progress_is_reported_per_file(source_tree: Path, tmp_path: Path) -> None:
    seen: list[BackupProgress] = []
    manager = BackupManager(tmp_path / "backups")
    backup = await manager.create_backup("n", source_tree, progress=seen.append)
    assert [p.files for p in seen] == [1, 2, 3, 4]
    assert seen[-1].bytes == backup.size_bytes
    restored: list[BackupProgress] = []
    await manager.restore_backup(backup.backup_id, tmp_path / "out", progress=restored.append)
    assert restored == seen


def test_the_package_exports_what_it_lists() -> None:
    import sergas_guard.recovery as recovery

    assert sorted(recovery.__all__) == recovery.__all__
    assert all(getattr(recovery, name, None) is not None for name in recovery.__all__)
