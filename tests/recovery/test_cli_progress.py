"""Progress bars of ``sergas-guard backup``: shown on a terminal, exact at the end, and
never changing what is backed up."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from sergas_guard.cli import backup_support, cli
from sergas_guard.cli.backup_progress import (
    BackupProgress,
    ProgressStrategy,
    progress_bar,
    tree_size,
)
from sergas_guard.recovery import BackupManager, FileSystemBackupStrategy
from tests.recovery.conftest import tree_state


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_progress_counts_what_the_backup_read_and_changes_nothing(
    source_tree: Path, tmp_path: Path
) -> None:
    console, out = _terminal()
    manager = BackupManager(tmp_path / "repo")
    with progress_bar(console) as progress:
        task = progress.add_task("backup", total=None, files=0)
        tracker = BackupProgress(progress, task)
        inner = FileSystemBackupStrategy(exclude=["*.sh"])
        manager.register_strategy("watched", ProgressStrategy(inner, tracker))
        watched = asyncio.run(manager.create_backup("w", source_tree, strategy="watched"))
        tracker.finish()
        shown = progress.tasks[0]
    assert shown.completed == watched.size_bytes == tree_size(source_tree, inner.exclude)[0]
    assert shown.fields["files"] == watched.file_count == 3
    assert "3 files" in out.getvalue()

    manager.register_strategy("plain", FileSystemBackupStrategy(exclude=["*.sh"]))
    plain = asyncio.run(manager.create_backup("p", source_tree, strategy="plain"))
    assert plain.size_bytes == watched.size_bytes
    assert plain.stored_bytes == 0
    for backup, target in ((watched, "a"), (plain, "b")):
        asyncio.run(manager.restore_backup(backup.backup_id, tmp_path / target))
    assert tree_state(tmp_path / "a") == tree_state(tmp_path / "b")
    assert "app/run.sh" not in tree_state(tmp_path / "a")


def test_single_file_source_is_counted(tmp_path: Path) -> None:
    console, _ = _terminal()
    source = tmp_path / "one.bin"
    source.write_bytes(b"x" * 5000)
    manager = BackupManager(tmp_path / "repo")
    with progress_bar(console) as progress:
        task = progress.add_task("backup", total=None, files=0)
        tracker = BackupProgress(progress, task)
        manager.register_strategy("w", ProgressStrategy(FileSystemBackupStrategy(), tracker))
        asyncio.run(manager.create_backup("w", source, strategy="w"))
        tracker.finish()
        assert (progress.tasks[0].completed, progress.tasks[0].fields["files"]) == (5000, 1)


def test_bars_on_a_terminal_only_and_on_stderr(
    source_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "SERGAS_GUARD_BACKUP_DIR": str(tmp_path / "repo"),
        "SERGAS_GUARD_BACKUP_PASSPHRASE": "progress-pass-123",
    }
    args = ["backup", "create", "--name", "n", "--source", str(source_tree), "--json"]
    plain = CliRunner().invoke(cli, args, env=env)
    assert plain.exit_code == 0, plain.output
    assert plain.stderr == ""  # not a terminal: no bars

    console, out = _terminal()
    monkeypatch.setattr(backup_support, "err_console", lambda: console)
    shown = CliRunner().invoke(cli, args, env=env)
    assert shown.exit_code == 0, shown.output
    json.loads(shown.stdout)  # the bars never mix into the JSON on stdout
    assert "4 files" in out.getvalue()
    assert "backup" in out.getvalue()

    target = tmp_path / "restored"
    backup_id = json.loads(shown.stdout)["backup"]["backup_id"]
    restore = ["backup", "restore", "--backup-id", backup_id, "--destination", str(target)]
    restored = CliRunner().invoke(cli, restore, env=env)
    assert restored.exit_code == 0, restored.output
    assert "restore" in out.getvalue()
    assert tree_state(target) == tree_state(source_tree)
