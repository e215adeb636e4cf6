"""docs/recovery.md's examples run as written, in order, in a temporary directory."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "recovery.md"
TEXT = DOC.read_text()
#: Runnable examples; a block that cannot run here is fenced "```python fragment".
BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.DOTALL | re.MULTILINE)
FENCES = re.findall(r"^```(\S*.*)$", TEXT, flags=re.MULTILINE)


def test_every_python_block_runs_or_is_marked_a_fragment() -> None:
    openings = FENCES[::2]
    assert FENCES[1::2] == [""] * len(openings)  # every block is closed
    python = [fence for fence in openings if fence.startswith("python")]
    assert set(python) <= {"python", "python fragment"}
    assert python.count("python") == len(BLOCKS) >= 6


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
    namespace: dict[str, object] = {"__name__": "docs_recovery"}
    for number, source in enumerate(BLOCKS):
        code = compile(source, f"{DOC}:block{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        outcome = eval(code, namespace)
        if inspect.iscoroutine(outcome):
            await outcome
    assert namespace["success"] is True  # the seed's restore, checked by the block itself
