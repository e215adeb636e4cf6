"""kill -9 during a backup loses nothing: earlier backups restore, the repository
verifies, and the next run completes (re-using the packs the killed one finished)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sergas_guard.recovery import BackupManager, BackupType
from sergas_guard.recovery.atomic import TEMP_PREFIX
from tests.recovery.conftest import tree_state

ROOT = Path(__file__).resolve().parents[2]
BACKUP_IN_A_CHILD = """
import asyncio, sys
from sergas_guard.recovery import BackupManager, BackupType
async def main() -> None:
    manager = BackupManager(sys.argv[1], passphrase=lambda: "pw")
    print("ready", flush=True)
    await manager.create_backup("k", sys.argv[2], backup_type=BackupType.INCREMENTAL)
    print("done", flush=True)
asyncio.run(main())
"""


def _fill(source: Path, seed: int, files: int, size: int) -> None:
    rng = random.Random(seed)
    for index in range(files):
        (source / f"blob{index:02}.bin").write_bytes(rng.randbytes(size))
    (source / "notes").mkdir(exist_ok=True)
    (source / "notes" / f"round{seed}.txt").write_text(f"round {seed}\n")


def _packs(repo: Path) -> int:
    """Complete pack files (a killed writer may also leave temporary ones)."""
    return sum(
        1 for p in (repo / "data").rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)
    )


def _kill_during_backup(repo: Path, source: Path, delay: float) -> bool:
    """Run a backup in a child process and SIGKILL it ``delay`` seconds after it starts;
    True when it finished before the kill."""
    with subprocess.Popen(
        [sys.executable, "-c", BACKUP_IN_A_CHILD, str(repo), str(source)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return False
        return child.returncode == 0


@pytest.mark.parametrize("delay", [0.0, 0.25, 0.45])
async def test_a_killed_backup_loses_nothing(tmp_path: Path, delay: float) -> None:
    source, repo = tmp_path / "source", tmp_path / "repo"
    source.mkdir()
    await asyncio.to_thread(_fill, source, 1, 4, 1 << 20)
    manager = BackupManager(repo, passphrase=lambda: "pw")
    first = await manager.create_backup("k", source)
    first_state = await asyncio.to_thread(tree_state, source)

    await asyncio.to_thread(_fill, source, 2, 40, 1 << 20)  # 40 MiB of new data
    packs_before = await asyncio.to_thread(_packs, repo)
    finished = await asyncio.to_thread(_kill_during_backup, repo, source, delay)
    packs_left = await asyncio.to_thread(_packs, repo) - packs_before

    manager = BackupManager(repo, passphrase=lambda: "pw")
    assert (await manager.verify(read_data_fraction=1.0)).ok
    await manager.restore_backup(first.backup_id, tmp_path / "first")
    assert await asyncio.to_thread(tree_state, tmp_path / "first") == first_state

    second_state = await asyncio.to_thread(tree_state, source)
    again = await manager.create_backup("k", source, backup_type=BackupType.INCREMENTAL)
    await manager.restore_backup(again.backup_id, tmp_path / "second")
    assert await asyncio.to_thread(tree_state, tmp_path / "second") == second_state
    if not finished and packs_left:
        # the killed run's complete packs were re-used, not written again, and reported
        assert again.stored_bytes < 40 << 20
        manifest = await asyncio.to_thread(manager._load, again.backup_id)
        # those the killed run had not yet indexed are reported as resumed
        assert 0 <= manifest.stats["resumed_packs"] <= packs_left
    assert (await manager.verify(read_data_fraction=1.0)).ok


WRITE_PACKS_THEN_DIE = """
import os, sys
from pathlib import Path
from sergas_guard.recovery.repository import Repository
repo = Repository.open(Path(sys.argv[1]))
writer = repo.writer().__enter__()
for path in sorted(Path(sys.argv[2]).glob("*.bin")):
    with path.open("rb") as stream:
        for chunk in repo.chunks_of(stream):
            writer.add(chunk)  # writes a pack whenever one is full
os._exit(0)  # dies before the index is flushed, as a kill would
"""


async def test_packs_of_an_interrupted_writer_are_reported_and_reused(tmp_path: Path) -> None:
    source, repo = tmp_path / "source", tmp_path / "repo"
    source.mkdir()
    await asyncio.to_thread(_fill, source, 3, 20, 1 << 20)
    manager = BackupManager(repo)
    await manager.create_backup("k", source / "notes")  # creates the repository
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WRITE_PACKS_THEN_DIE, str(repo), str(source)],
        cwd=ROOT,
        check=True,
    )
    backup = await manager.create_backup("k", source)
    manifest = await asyncio.to_thread(manager._load, backup.backup_id)
    assert manifest.stats["resumed_packs"] >= 1
    assert backup.stored_bytes < 8 << 20  # at most the unpacked tail was written again
