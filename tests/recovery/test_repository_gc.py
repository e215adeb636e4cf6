"""collect_garbage: removes what no manifest names, never a running backup's chunks."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sergas_guard.errors import BackupError
from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.repository import ChunkRef, Repository

SMALL_CHUNKS = ChunkerParams(avg_size=4096, min_size=1024, max_size=16384)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        tmp_path / "repo", passphrase=None, chunker=SMALL_CHUNKS, pack_size=32 * 1024
    )


def backup(repo: Repository, backup_id: str, data: bytes) -> list[ChunkRef]:
    with repo.lock(), repo.writer() as writer:
        refs = [writer.add(c) for c in repo.chunks_of(io.BytesIO(data))]
        writer.flush()
        repo.write_manifest(backup_id, {"entries": [{"path": "f", "chunks": [r.id for r in refs]}]})
    return refs


def stored_bytes(repo: Repository) -> int:
    return sum(p.stat().st_size for p in (repo.path / "data").glob("*/*"))


def test_unreferenced_chunks_are_removed_and_referenced_kept(repo: Repository) -> None:
    shared = random.randbytes(50_000)
    kept_data = shared + random.randbytes(60_000)
    kept = backup(repo, "kept", kept_data)
    gone = backup(repo, "gone", shared + random.randbytes(90_000))
    before = stored_bytes(repo)
    repo.delete_manifest("gone")

    dry = repo.collect_garbage(dry_run=True)
    assert dry.dry_run
    assert dry.chunks_removed > 0
    assert stored_bytes(repo) == before

    report = repo.collect_garbage()
    assert report.chunks_removed == dry.chunks_removed
    assert stored_bytes(repo) < before - 60_000
    fresh = Repository.open(repo.path)
    assert b"".join(fresh.read_chunk(r) for r in kept) == kept_data
    unique_gone = {r.id for r in gone} - {r.id for r in kept}
    assert not any(fresh.has_chunk(cid) for cid in unique_gone)
    assert fresh.verify(read_data_fraction=1.0).ok
    assert repo.collect_garbage().chunks_removed == 0


def test_packs_holding_live_and_dead_chunks_are_rewritten(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "r", passphrase=lambda: "pw", pack_size=1 << 20)
    live, dead = random.randbytes(3000), random.randbytes(3000)
    with repo.writer() as writer:
        live_ref, writer_dead = writer.add(live), writer.add(dead)
    repo.write_manifest("b", {"entries": [{"path": "f", "chunks": [live_ref.id]}]})
    report = repo.collect_garbage()
    assert (report.packs_rewritten, report.chunks_removed) == (1, 1)
    fresh = Repository.open(repo.path, passphrase=lambda: "pw")
    assert fresh.read_chunk(live_ref) == live
    assert not fresh.has_chunk(writer_dead.id)
    assert fresh.verify(read_data_fraction=1.0).ok


def test_an_unreadable_manifest_stops_collection(repo: Repository) -> None:
    backup(repo, "a", random.randbytes(20_000))
    with repo.writer() as writer:
        writer.add(random.randbytes(5000))
    (repo.path / "snapshots" / "a").write_bytes(b"garbage")
    before = stored_bytes(repo)
    with pytest.raises(BackupError, match="nothing removed"):
        repo.collect_garbage()
    assert stored_bytes(repo) == before


def test_temporary_files_are_removed(repo: Repository) -> None:
    leftover = repo.path / "data" / "ab" / ".tmp-deadbeef"
    leftover.write_bytes(b"half a pack")
    assert repo.collect_garbage().temp_files_removed == 1
    assert not leftover.exists()


HOLDER = textwrap.dedent(
    """
    import io, sys
    from pathlib import Path
    from sergas_guard.recovery.repository import Repository

    repo = Repository.open(Path(sys.argv[1]))
    with repo.lock(), repo.writer() as writer:
        ref = writer.add(b"fresh chunk of a running backup" * 100)
        writer.flush()
        print(ref.id, flush=True)
        sys.stdin.readline()          # the test lets us finish (or kills us)
        repo.write_manifest("running", {"entries": [{"path": "f", "chunks": [ref.id]}]})
    """
)


@pytest.fixture
def holder(repo: Repository) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None
        chunk = process.stdout.readline().strip()
        try:
            yield process, chunk
        finally:
            process.kill()


def test_gc_waits_for_a_running_backup(
    repo: Repository, holder: tuple[subprocess.Popen[str], str]
) -> None:
    process, chunk = holder
    with pytest.raises(BackupError, match="locked"):
        repo.collect_garbage(timeout=0.3)
    assert process.stdin is not None
    process.stdin.write("done\n")
    process.stdin.flush()
    assert process.wait(timeout=30) == 0
    repo.collect_garbage(timeout=10)
    assert Repository.open(repo.path).read_chunk(chunk) == b"fresh chunk of a running backup" * 100


def test_a_killed_backup_leaves_no_lock_behind(
    repo: Repository, holder: tuple[subprocess.Popen[str], str]
) -> None:
    process, chunk = holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    report = repo.collect_garbage(timeout=10)
    # The killed backup never wrote its manifest: its chunk is garbage now.
    assert report.chunks_removed == 1
    assert not Repository.open(repo.path).has_chunk(chunk)


def test_collection_stops_rather_than_copy_a_damaged_chunk(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "r", passphrase=None, pack_size=1 << 20)
    with repo.writer() as writer:
        live, dead = writer.add(random.randbytes(3000)), writer.add(random.randbytes(3000))
    repo.write_manifest("b", {"entries": [{"path": "f", "chunks": [live.id]}]})
    location = repo._index.get(live.id)
    assert location is not None
    pack = repo.path / "data" / location.pack_id[:2] / location.pack_id
    content = bytearray(pack.read_bytes())
    content[location.entry.offset + 100] ^= 0x04
    pack.write_bytes(bytes(content))
    with pytest.raises(BackupError, match="nothing removed"):
        repo.collect_garbage()
    assert pack.exists()
    assert repo.has_chunk(dead.id)


def test_no_deduplication_against_a_pack_collected_meanwhile(repo: Repository) -> None:
    with repo.writer() as writer:
        orphan = writer.add(random.randbytes(5000))
        writer._write_pack()
        writer._unindexed.clear()  # a killed backup's pack: no index names it
    stale = Repository.open(repo.path)
    assert stale.has_chunk(orphan.id)
    # A collection in another process removes the orphan pack; the index files it
    # leaves may be the very ones ``stale`` has already loaded.
    for pack in (repo.path / "data").glob("*/*"):
        pack.unlink()
    with stale.writer() as writer:
        assert not stale.has_chunk(orphan.id)
        writer.add(b"x" * 5000)
