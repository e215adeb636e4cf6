"""The filesystem strategy's walk and options, on real trees."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from sergas_guard.errors import BackupError, ConfigurationError
from sergas_guard.recovery.filesystem import FileSystemBackupStrategy, scan_tree
from sergas_guard.recovery.strategy import BackupStrategy


def test_the_strategy_implements_the_protocol() -> None:
    strategy = FileSystemBackupStrategy(compress=True)
    assert isinstance(strategy, BackupStrategy)
    assert strategy.kind == "filesystem"
    assert strategy.restores_in_place


def test_walk_order_puts_each_directory_before_its_contents(source_tree: Path) -> None:
    paths = [entry.path for entry in scan_tree(source_tree)]
    assert paths == [
        "app",
        "app/config.toml",
        "app/run.sh",
        "app/secret.txt",
        "app/static",
        "app/static/logo.bin",
        "dangling",
        "empty",
        "link-to-config",
        "outside",
    ]


def test_symlinks_are_reported_as_links_never_followed(source_tree: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "private.txt").write_text("not part of the source")
    (source_tree / "dirlink").symlink_to(elsewhere)
    entries = {entry.path: entry for entry in scan_tree(source_tree)}
    assert entries["dirlink"].type == "symlink"
    assert entries["dirlink"].target == str(elsewhere)
    assert entries["outside"].target == "/etc/passwd"
    assert entries["dangling"].type == "symlink"
    assert not any(path.startswith("dirlink/") for path in entries)


def test_special_files_are_skipped(source_tree: Path) -> None:
    os.mkfifo(source_tree / "pipe")
    assert "pipe" not in {entry.path for entry in scan_tree(source_tree)}


def test_a_file_source_is_its_own_single_entry(source_tree: Path) -> None:
    entries = list(scan_tree(source_tree / "app" / "config.toml"))
    assert [(entry.path, entry.type) for entry in entries] == [("config.toml", "file")]


def test_a_missing_source_is_a_backup_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="cannot read"):
        list(scan_tree(tmp_path / "absent"))


@pytest.mark.parametrize(
    ("patterns", "gone"),
    [
        (["*.toml"], {"app/config.toml"}),
        (["static"], {"app/static", "app/static/logo.bin"}),
        (["app/static/*"], {"app/static/logo.bin"}),
        (
            ["app"],
            {
                "app",
                "app/config.toml",
                "app/run.sh",
                "app/secret.txt",
                "app/static",
                "app/static/logo.bin",
            },
        ),
    ],
)
def test_exclude_patterns_leave_out_matches_and_their_subtrees(
    source_tree: Path, patterns: list[str], gone: set[str]
) -> None:
    everything = {entry.path for entry in scan_tree(source_tree)}
    strategy = FileSystemBackupStrategy(exclude=patterns)
    kept = {entry.path for entry in scan_tree(source_tree, exclude=strategy.exclude)}
    assert kept == everything - gone


@pytest.mark.parametrize("bad", ["*.tmp", [""], [3], ["a\0b"]])
def test_bad_exclude_patterns_fail_at_construction(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        FileSystemBackupStrategy(exclude=bad)  # type: ignore[arg-type]
    assert info.value.field == "exclude"


async def test_stage_returns_the_source_itself(source_tree: Path, tmp_path: Path) -> None:
    strategy = FileSystemBackupStrategy()
    assert await strategy.stage(str(source_tree), tmp_path) == source_tree
    with pytest.raises(BackupError):
        await strategy.stage(str(tmp_path / "absent"), tmp_path)


def test_one_file_system_does_not_enter_other_mounts() -> None:
    dev, shm = Path("/dev"), Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == dev.stat().st_dev or not os.access(shm, os.W_OK):
        pytest.skip("/dev/shm is not a separate, writable mount here")
    with tempfile.TemporaryDirectory(dir=shm) as mine:
        Path(mine, "file").write_text("on another device")
        inside = f"shm/{Path(mine).name}"

        def all_but_mine(path: str) -> bool:
            return path not in {"shm", inside, f"{inside}/file"}

        everything = [e.path for e in scan_tree(dev, exclude=all_but_mine)]
        same_device = [e.path for e in scan_tree(dev, exclude=all_but_mine, one_file_system=True)]
    assert everything == ["shm", inside, f"{inside}/file"]
    assert same_device == ["shm"]  # the mount point itself stays, as an empty directory
