"""verify: structure and data checks; corruption is reported with what it affects."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.crypto import KdfParams
from sergas_guard.recovery.repository import ChunkRef, Repository

SMALL_CHUNKS = ChunkerParams(avg_size=4096, min_size=1024, max_size=16384)


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    return Repository.init(
        tmp_path / "repo",
        passphrase=(lambda: "pw") if request.param else None,
        chunker=SMALL_CHUNKS,
        pack_size=32 * 1024,
        kdf=KdfParams(n=2**10),
    )


def backup(repo: Repository, backup_id: str, files: dict[str, bytes]) -> dict[str, list[ChunkRef]]:
    refs: dict[str, list[ChunkRef]] = {}
    with repo.lock(), repo.writer() as writer:
        for path, data in files.items():
            refs[path] = [writer.add(c) for c in repo.chunks_of(io.BytesIO(data))]
        writer.flush()
        entries = [{"path": p, "chunks": [r.id for r in rs]} for p, rs in refs.items()]
        repo.write_manifest(backup_id, {"entries": entries})
    return refs


def pack_of(repo: Repository, chunk: ChunkRef) -> Path:
    location = repo._index.get(chunk.id)
    assert location is not None
    return repo.path / "data" / location.pack_id[:2] / location.pack_id


@pytest.fixture
def two_backups(repo: Repository) -> dict[str, list[ChunkRef]]:
    backup(repo, "old", {"keep/a.bin": random.randbytes(70_000)})
    return backup(repo, "new", {"docs/b.bin": random.randbytes(70_000), "c.txt": b"c" * 5000})


def test_a_healthy_repository_verifies(repo: Repository, two_backups: object) -> None:
    report = repo.verify(read_data_fraction=1.0)
    assert report.ok, report.problems
    assert report.packs_read == report.packs_checked > 1
    assert report.chunks_read >= len(repo._index)


def test_flipped_byte_in_a_pack_is_found_by_reading_data(
    repo: Repository, two_backups: dict[str, list[ChunkRef]]
) -> None:
    victim = two_backups["docs/b.bin"][1]
    pack = pack_of(repo, victim)
    location = repo._index.get(victim.id)
    assert location is not None
    content = bytearray(pack.read_bytes())
    content[location.entry.offset + location.entry.length // 2] ^= 0x01
    pack.write_bytes(bytes(content))

    assert repo.verify().ok  # structure alone cannot see it
    report = repo.verify(read_data_fraction=1.0)
    assert not report.ok
    assert victim.id in report.damaged_chunks
    assert "docs/b.bin" in report.affected["new"]
    assert "old" not in report.affected
    assert any(pack.name in p and victim.id in p for p in report.problems)
    assert not any("garbage collection" in p for p in report.problems)
    assert any("backup new" in p and "docs/b.bin" in p for p in report.problems)
    with pytest.raises(IntegrityError):
        repo.read_chunk(victim)


def test_truncated_pack_is_found_by_the_structure_check(
    repo: Repository, two_backups: dict[str, list[ChunkRef]]
) -> None:
    victim = two_backups["docs/b.bin"][0]
    pack = pack_of(repo, victim)
    pack.write_bytes(pack.read_bytes()[:100])
    report = repo.verify()
    assert not report.ok
    assert "docs/b.bin" in report.affected["new"]
    assert any("truncated" in p and pack.name in p for p in report.problems)
    with pytest.raises(IntegrityError):
        repo.read_chunk(victim)


def test_missing_pack_is_reported(repo: Repository, two_backups: dict[str, list[ChunkRef]]) -> None:
    victim = two_backups["docs/b.bin"][0]
    pack = pack_of(repo, victim)
    pack.unlink()
    report = repo.verify()
    assert not report.ok
    assert any(f"pack {pack.name} is missing" in p for p in report.problems)
    assert "docs/b.bin" in report.affected["new"]
    with pytest.raises(IntegrityError, match=r"is missing|not in the repository"):
        repo.read_chunk(victim)


def test_a_new_backup_stores_again_what_a_missing_pack_held(repo: Repository) -> None:
    data = random.randbytes(70_000)
    first = backup(repo, "first", {"f": data})["f"]
    pack_of(repo, first[0]).unlink()
    fresh = Repository.open(repo.path, passphrase=(lambda: "pw") if repo.encrypted else None)
    assert not fresh.has_chunk(first[0].id)  # no deduplication against lost data
    assert set(fresh.verify().affected) == {"first"}
    again = backup(fresh, "again", {"f": data})["f"]
    assert again == first
    # Same content, same ids: storing it again heals the older backup too.
    assert b"".join(fresh.read_chunk(r) for r in first) == data
    report = fresh.verify(read_data_fraction=1.0)
    assert report.affected == {}
    assert [p for p in report.problems if "is missing" not in p] == []
    # Collection writes an index without the missing pack.
    fresh.collect_garbage()
    assert fresh.verify(read_data_fraction=1.0).ok


def test_manifest_naming_an_unknown_chunk_is_reported(repo: Repository) -> None:
    repo.write_manifest("dangling", {"entries": [{"path": "x", "chunks": ["ab" * 32]}]})
    report = repo.verify()
    assert report.affected == {"dangling": ("x",)}


def test_damaged_manifest_is_reported(repo: Repository, two_backups: object) -> None:
    path = repo.path / "snapshots" / "old"
    path.write_bytes(path.read_bytes()[:-3])
    report = repo.verify()
    assert report.affected == {"old": ("<manifest>",)}


def test_a_fraction_reads_a_subset(repo: Repository, two_backups: object) -> None:
    report = repo.verify(read_data_fraction=0.01, seed=1)
    assert report.packs_read == 1
    assert report.ok


def test_damaged_index_fragment_is_reported_and_repaired(
    repo: Repository, two_backups: dict[str, list[ChunkRef]]
) -> None:
    fragment = next((repo.path / "index").iterdir())
    content = bytearray(fragment.read_bytes())
    content[-5] ^= 0xFF
    fragment.write_bytes(bytes(content))
    fresh = Repository.open(repo.path, passphrase=(lambda: "pw") if repo.encrypted else None)
    report = fresh.verify()
    assert any(f"index fragment {fragment.name} is damaged" in p for p in report.problems)
    # Nothing is lost: the packs' own tables still locate every chunk.
    assert all(fresh.has_chunk(r.id) for refs in two_backups.values() for r in refs)
    fresh.collect_garbage()
    assert fresh.verify(read_data_fraction=1.0).ok
    assert not fragment.exists()


def test_packs_of_an_interrupted_writer_are_orphans_until_collected(repo: Repository) -> None:
    with repo.writer() as writer:
        for _ in range(4):
            writer.add(random.randbytes(20_000))
        # Killed before its flush: simulated by dropping the unwritten index.
        writer._unindexed.clear()
        writer._write_pack()
        writer._unindexed.clear()
    fresh = Repository.open(repo.path, passphrase=(lambda: "pw") if repo.encrypted else None)
    assert len(fresh.orphan_packs) >= 2
    assert fresh.verify(read_data_fraction=1.0).ok
    assert fresh.collect_garbage().chunks_removed == 4
    assert not fresh.orphan_packs


def test_a_pack_stored_after_the_refresh_is_no_problem(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = Repository.open(repo.path, passphrase=(lambda: "pw") if repo.encrypted else None)
    # Another process's backup stores a pack just after ``repo`` refreshed its index.
    monkeypatch.setattr(repo, "_refresh", lambda: None)
    with other.writer() as writer:
        writer.add(random.randbytes(5000))
    report = repo.verify()
    assert report.ok, report.problems


def test_a_damaged_unindexed_pack_is_reported(repo: Repository) -> None:
    with repo.writer() as writer:
        writer.add(random.randbytes(5000))
        writer._write_pack()
        writer._unindexed.clear()  # as if killed before the index
    pack = next(p for p in (repo.path / "data").glob("*/*"))
    pack.write_bytes(pack.read_bytes()[:-1])
    fresh = Repository.open(repo.path, passphrase=(lambda: "pw") if repo.encrypted else None)
    report = fresh.verify()
    assert any("unindexed" in p and pack.name in p for p in report.problems)
    assert fresh.collect_garbage().packs_deleted == 1
    assert fresh.verify().ok
