"""Backup chains on real trees: every backup of a chain restores exactly its moment."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from sergas_guard.errors import BackupError, BackupNotFoundError, ConfigurationError
from sergas_guard.recovery import BackupManager, BackupType, RetentionPolicy, filesystem
from tests.recovery.conftest import tree_state

#: Longer than a kernel timestamp tick (1-10 ms), far shorter than the default second.
SLACK_S = 0.02


@pytest.fixture
def no_racy_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust timestamps older than SLACK_S before the parent's start, so that files the
    test wrote (then waited out the slack with :func:`settle`) count as unchanged."""
    monkeypatch.setattr(filesystem, "RACY_SLACK_NS", int(SLACK_S * 1e9))


async def settle() -> None:
    """Wait until what was just written is older than the racy slack."""
    await asyncio.sleep(SLACK_S * 1.5)


def _change_tree(root: Path, step: int) -> None:
    """One round of edits: modify, delete, add, re-point a link, remove a directory."""
    if step == 1:
        (root / "app" / "config.toml").write_text("[server]\nport = 9090\n")
        (root / "app" / "secret.txt").unlink()
        (root / "new.txt").write_text("added after the full backup")
        (root / "link-to-config").unlink()
        (root / "link-to-config").symlink_to("app/run.sh")
    else:
        shutil.rmtree(root / "app" / "static")
        (root / "empty" / "now-not").mkdir()
        (root / "new.txt").unlink()


async def _restored(manager: BackupManager, backup_id: str, where: Path) -> object:
    await manager.restore_backup(backup_id, where)
    return await asyncio.to_thread(tree_state, where)


@pytest.mark.usefixtures("no_racy_slack")
@pytest.mark.parametrize("later", [BackupType.INCREMENTAL, BackupType.DIFFERENTIAL])
async def test_each_backup_of_a_chain_restores_its_own_moment(
    source_tree: Path, tmp_path: Path, later: BackupType
) -> None:
    manager = BackupManager(tmp_path / "repo")
    states, backups = [], []
    for step in range(3):
        if step:
            await asyncio.to_thread(_change_tree, source_tree, step)
        states.append(await asyncio.to_thread(tree_state, source_tree))
        await settle()
        kind = BackupType.FULL if step == 0 else later
        backups.append(await manager.create_backup("nightly", source_tree, backup_type=kind))

    full, first, second = backups
    assert [b.backup_type for b in backups] == [BackupType.FULL, later, later]
    assert first.parent_id == full.backup_id
    assert second.parent_id == (
        first.backup_id if later is BackupType.INCREMENTAL else full.backup_id
    )
    assert {b.chain_root_id for b in backups} == {full.backup_id}
    # the unchanged executable and logo were not read again
    assert first.stored_bytes < full.stored_bytes
    for index, backup in enumerate(backups):
        assert await _restored(manager, backup.backup_id, tmp_path / f"r{index}") == states[index]
    assert [b.backup_id for b in manager.list_backups()] == [b.backup_id for b in backups]
    assert [b.backup_id for b in manager.list_backups(backup_type=later)] == [
        first.backup_id,
        second.backup_id,
    ]


async def test_unchanged_files_are_reused_unread(
    source_tree: Path, tmp_path: Path, no_racy_slack: None
) -> None:
    manager = BackupManager(tmp_path / "repo")
    await settle()
    await manager.create_backup("n", source_tree)
    again = await manager.create_backup("n", source_tree, backup_type=BackupType.INCREMENTAL)
    manifest = await asyncio.to_thread(manager._load, again.backup_id)
    assert manifest.stats["files_reused"] == 4
    assert manifest.stats["files_read"] == 0
    assert again.stored_bytes == 0


async def test_racily_fresh_files_are_read_again(source_tree: Path, tmp_path: Path) -> None:
    manager = BackupManager(tmp_path / "repo")
    await manager.create_backup("n", source_tree)
    again = await manager.create_backup("n", source_tree, backup_type=BackupType.INCREMENTAL)
    manifest = await asyncio.to_thread(manager._load, again.backup_id)
    # written within a second of the parent's start: not trusted, yet deduplicated
    assert manifest.stats["files_read"] >= 3
    assert again.stored_bytes == 0


async def test_same_size_rewrite_with_restored_mtime_is_still_seen(
    source_tree: Path, tmp_path: Path, no_racy_slack: None
) -> None:
    manager = BackupManager(tmp_path / "repo")
    config = source_tree / "app" / "config.toml"
    await manager.create_backup("n", source_tree)
    before = config.stat()
    config.write_text("[server]\nport = 9999\n")  # same length
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    expected = await asyncio.to_thread(tree_state, source_tree)
    later = await manager.create_backup("n", source_tree, backup_type=BackupType.INCREMENTAL)
    assert await _restored(manager, later.backup_id, tmp_path / "out") == expected


async def test_a_differential_without_a_full_becomes_a_full(
    source_tree: Path, tmp_path: Path
) -> None:
    manager = BackupManager(tmp_path / "repo")
    diff = await manager.create_backup("n", source_tree, backup_type=BackupType.DIFFERENTIAL)
    incr = await manager.create_backup("n", source_tree / "app", backup_type=BackupType.INCREMENTAL)
    assert diff.backup_type is BackupType.FULL
    assert incr.backup_type is BackupType.FULL  # another source: another chain
    assert incr.parent_id is None


async def test_a_snapshot_shares_chunks_but_depends_on_nothing(
    source_tree: Path, tmp_path: Path, no_racy_slack: None
) -> None:
    manager = BackupManager(tmp_path / "repo")
    await manager.create_backup("n", source_tree)
    snap = await manager.create_backup("n", source_tree, backup_type="snapshot")
    assert snap.backup_type is BackupType.SNAPSHOT
    assert snap.parent_id is None
    assert snap.chain_root_id == snap.backup_id
    assert snap.stored_bytes == 0


async def test_restore_at_a_moment_picks_the_newest_backup_not_after_it(
    source_tree: Path, tmp_path: Path
) -> None:
    manager = BackupManager(tmp_path / "repo")
    first = await manager.create_backup("n", source_tree)
    expected = await asyncio.to_thread(tree_state, source_tree)
    await asyncio.to_thread(_change_tree, source_tree, 1)
    second = await manager.create_backup("n", source_tree)
    assert manager.backup_at(second.created_at).backup_id == second.backup_id
    await manager.restore_backup(restore_path=tmp_path / "out", at=first.completed_at)
    assert await asyncio.to_thread(tree_state, tmp_path / "out") == expected
    with pytest.raises(BackupNotFoundError):
        manager.backup_at(first.created_at - timedelta(seconds=1))


async def test_restore_refuses_a_non_empty_target_unless_overwrite(
    source_tree: Path, tmp_path: Path
) -> None:
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source_tree)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(BackupError, match="not empty"):
        await manager.restore_backup(backup.backup_id, target)
    assert await manager.restore_backup(backup.backup_id, target, overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    assert (target / "app" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"


async def test_unknown_backups_and_missing_repositories_are_not_found(tmp_path: Path) -> None:
    manager = BackupManager(tmp_path / "repo")
    assert manager.list_backups() == []
    with pytest.raises(BackupNotFoundError):
        await manager.restore_backup("backup_20251019_120000", tmp_path / "out")
    with pytest.raises(BackupNotFoundError):
        await manager.verify()


async def test_concurrent_backups_on_one_repository(source_tree: Path, tmp_path: Path) -> None:
    one, two = BackupManager(tmp_path / "repo"), BackupManager(tmp_path / "repo")
    await one.create_backup("first", source_tree)  # the repository exists before the race
    results = await asyncio.gather(
        one.create_backup("a", source_tree),
        two.create_backup("b", source_tree),
        one.create_backup("c", source_tree, backup_type=BackupType.INCREMENTAL),
    )
    listed = {b.backup_id for b in BackupManager(tmp_path / "repo").list_backups()}
    assert {r.backup_id for r in results} <= listed
    assert (await one.verify(read_data_fraction=1.0)).ok


async def test_cleanup_is_a_dry_run_unless_confirmed_and_keeps_chains(
    source_tree: Path, tmp_path: Path
) -> None:
    manager = BackupManager(tmp_path / "repo")
    old_full = await manager.create_backup("n", source_tree)
    full = await manager.create_backup("n", source_tree)
    incr = await manager.create_backup("n", source_tree, backup_type=BackupType.INCREMENTAL)
    policy = RetentionPolicy(keep_last=1, use_retention_days=False)

    dry = await manager.cleanup(policy)
    assert dry.dry_run
    assert dry.removed == ()
    assert len(manager.list_backups()) == 3
    keep = {d.backup_id: d.keep for d in dry.decisions}
    assert keep == {old_full.backup_id: False, full.backup_id: True, incr.backup_id: True}

    done = await manager.cleanup(policy, confirm=True)
    assert done.removed == (old_full.backup_id,)
    assert [b.backup_id for b in manager.list_backups()] == [full.backup_id, incr.backup_id]
    assert await manager.restore_backup(incr.backup_id, tmp_path / "out")
    assert (await manager.verify(read_data_fraction=1.0)).ok


async def test_seed_retention_days_keep_young_backups(source_tree: Path, tmp_path: Path) -> None:
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source_tree, retention_days=30)
    report = await manager.cleanup(confirm=True, now=backup.created_at + timedelta(days=29))
    assert report.removed == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"backup_type": "weekly"}, "backup_type"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"strategy": "nfs"}, "strategy"),
    ],
)
async def test_bad_backup_arguments_name_the_field(
    source_tree: Path, tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    manager = BackupManager(tmp_path / "repo")
    arguments: dict[str, object] = {"name": "n", "source": str(source_tree), **kwargs}
    with pytest.raises(ConfigurationError) as info:
        await manager.create_backup(**arguments)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"compression_level": 0}, "compression_level"),
        ({"compression_level": 23}, "compression_level"),
        ({"passphrase": "plain string"}, "passphrase"),
    ],
)
def test_bad_manager_arguments_name_the_field(
    tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        BackupManager(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_register_strategy_checks_the_protocol(tmp_path: Path) -> None:
    manager = BackupManager(tmp_path)
    with pytest.raises(ConfigurationError):
        manager.register_strategy("x", object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        manager.register_strategy("", filesystem.FileSystemBackupStrategy())
