"""The restore pipeline through the manager, on real files: chunks decoded ahead on a
thread pool, files written and published in batches."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery import BackupManager
from sergas_guard.recovery.restore_target import BATCH_FILES, TEMP_PREFIX


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _files_under(root: Path) -> dict[str, bytes]:
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


async def test_a_damaged_chunk_far_ahead_fails_its_file_and_nothing_is_half_written(
    tmp_path: Path,
) -> None:
    """A flipped byte in a real pack, in the chunk of a file hundreds of entries into the
    restore (decoded ahead while earlier batches are written): the restore fails naming
    that file, the file is not published, earlier batches are published whole, and no
    temporary file is left."""
    rng = random.Random(11)
    files = {f"d{i // 100}/f{i:03}": rng.randbytes(rng.randint(100, 3000)) for i in range(320)}
    files["z/large.bin"] = rng.randbytes(3 << 20)  # several chunks, after the victim
    source = tmp_path / "source"
    await asyncio.to_thread(_write_tree, source, files)
    manager = BackupManager(tmp_path / "repo", passphrase=lambda: "pass")
    backup = await manager.create_backup("n", source)
    manifest = await asyncio.to_thread(manager._load, backup.backup_id)
    in_order = [e for e in manifest.entries if e.type == "file"]
    victim = in_order[BATCH_FILES + 30]
    repo = manager._open(create=False)
    location = repo.locate(victim.chunks[0])
    pack = repo.path / "data" / location.pack_id[:2] / location.pack_id
    raw = bytearray(pack.read_bytes())
    raw[location.entry.offset + location.entry.length // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as info:
        await manager.restore_backup(backup.backup_id, out)
    assert repr(victim.path) in str(info.value)
    restored = await asyncio.to_thread(_files_under, out)
    assert victim.path not in restored
    assert not [name for name in restored if os.path.basename(name).startswith(TEMP_PREFIX)]
    assert len(restored) >= BATCH_FILES  # the batches before the victim's were published
    assert all(files[name] == data for name, data in restored.items())


async def test_a_later_entry_for_a_name_wins(tmp_path: Path) -> None:
    """A manifest naming one path twice (a hostile or odd one): decoding ahead keeps the
    manifest's order, so the later entry is what the restore leaves."""
    source = tmp_path / "source"
    await asyncio.to_thread(
        _write_tree, source, {"a.txt": b"first " * 1000, "b.txt": b"second " * 3000}
    )
    manager = BackupManager(tmp_path / "repo")
    backup = await manager.create_backup("n", source)
    manifest = await asyncio.to_thread(manager._load, backup.backup_id)
    entries = {e.path: e for e in manifest.entries}
    again = replace(entries["b.txt"], path="a.txt")
    doubled = replace(
        manifest,
        backup_id="backup_doubled",
        entries=(entries["a.txt"], entries["b.txt"], again),
    )
    repo = manager._open(create=False)
    await asyncio.to_thread(repo.write_manifest, doubled.backup_id, doubled.to_dict())

    await manager.restore_backup(doubled.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"second " * 3000
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"second " * 3000
