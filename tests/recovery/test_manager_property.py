"""Property: whatever trees a source goes through, and whatever types its backups
have, restoring any backup gives exactly the tree at that backup (deletions included)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.recovery import BackupManager, BackupType, filesystem
from tests.recovery.conftest import tree_state

File: TypeAlias = tuple[bytes, int]  # content, mode
Link: TypeAlias = str  # target
Tree: TypeAlias = dict[str, "File | Link | Tree"]

SLACK_S = 0.02
NAMES = st.sampled_from(["a", "b", "c", "d.txt", "e e"])
FILES = st.tuples(st.binary(max_size=40), st.sampled_from([0o644, 0o600, 0o755, 0o444]))
LINKS = st.sampled_from(["a", "../b", "/etc/hostname", "c/d.txt", "missing"])
LEAVES = st.one_of(FILES, LINKS)
DEEPEST = st.dictionaries(NAMES, LEAVES, max_size=2)
MIDDLE = st.dictionaries(NAMES, st.one_of(LEAVES, DEEPEST), max_size=3)
TREES: st.SearchStrategy[Tree] = st.dictionaries(NAMES, st.one_of(LEAVES, MIDDLE), max_size=4)
STEPS = st.lists(st.tuples(TREES, st.sampled_from(list(BackupType))), min_size=1, max_size=3)


def _apply(root: Path, tree: Tree) -> None:
    """Make ``root`` hold exactly ``tree``, editing in place where it can (so that
    unchanged files keep their inode and timestamps, and rewritten ones keep inodes)."""
    for existing in list(os.scandir(root)):
        wanted = tree.get(existing.name)
        is_dir = existing.is_dir(follow_symlinks=False)
        is_link = existing.is_symlink()
        keep = (
            (isinstance(wanted, dict) and is_dir)
            or (isinstance(wanted, tuple) and not is_dir and not is_link)
            or (isinstance(wanted, str) and is_link and os.readlink(existing.path) == wanted)
        )
        if not keep:
            if is_dir:
                shutil.rmtree(existing.path)
            else:
                os.unlink(existing.path)
    for name, node in tree.items():
        path = root / name
        if isinstance(node, dict):
            path.mkdir(exist_ok=True)
            _apply(path, node)
        elif isinstance(node, tuple):
            content, mode = node
            if not path.exists() or path.read_bytes() != content:
                if path.exists():
                    path.chmod(0o600)
                with path.open("r+b" if path.exists() else "wb") as handle:
                    handle.write(content)
                    handle.truncate()
            path.chmod(mode)
        elif not path.is_symlink():
            path.symlink_to(node)


async def _run(steps: list[tuple[Tree, BackupType]], work: Path) -> None:
    source, repo = work / "source", work / "repo"
    source.mkdir()
    manager = BackupManager(repo)
    expected: list[tuple[str, dict[str, tuple[object, ...]]]] = []
    for tree, kind in steps:
        await asyncio.to_thread(_apply, source, tree)
        state = await asyncio.to_thread(tree_state, source)
        await asyncio.sleep(SLACK_S * 1.5)  # so unchanged files are trusted next time
        backup = await manager.create_backup("prop", source, backup_type=kind)
        expected.append((backup.backup_id, state))
    for index, (backup_id, restorable) in enumerate(expected):
        out = work / f"restore{index}"
        await manager.restore_backup(backup_id, out)
        assert await asyncio.to_thread(tree_state, out) == restorable, f"backup {index}"
    assert (await manager.verify(read_data_fraction=1.0)).ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_every_backup_restores_exactly_its_tree(steps: list[tuple[Tree, BackupType]]) -> None:
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as work:
        patch.setattr(filesystem, "RACY_SLACK_NS", int(SLACK_S * 1e9))
        asyncio.run(_run(steps, Path(work)))
