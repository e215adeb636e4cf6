"""docs/recovery.md's examples run as written, in order, in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doc_blocks import DocBlocks

DOC = DocBlocks(Path(__file__).resolve().parents[2] / "docs" / "recovery.md")
TEXT = DOC.text
BLOCKS = DOC.blocks


def test_every_python_block_runs_or_is_marked_a_fragment() -> None:
    DOC.check_fences(at_least=6)


def test_the_first_block_is_the_seed_snippet() -> None:
    for call in (
        'BackupManager(Path("backups"))',
        'register_strategy("filesystem", FileSystemBackupStrategy(compress=True))',
        "await manager.create_backup(name=",
        "manager.list_backups(backup_type=BackupType.FULL)",
        "await manager.restore_backup(backup_id=metadata.backup_id, restore_path=",
    ):
        assert call in BLOCKS[0]


def test_the_lead_has_a_command_line_section_to_fill() -> None:
    assert "\n## Command line\n" in TEXT


async def test_the_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKUP_PASSPHRASE", "correct horse battery staple")
    namespace = await DOC.run("docs_recovery")
    assert namespace["success"] is True  # the seed's restore, checked by the block itself
