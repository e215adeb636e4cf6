"""The backup repository on real files: chunks, dedup, manifests, opening, locks."""

from __future__ import annotations

import io
import json
import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import (
    BackupError,
    BackupNotFoundError,
    ConfigurationError,
    IntegrityError,
)
from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.crypto import KdfParams
from sergas_guard.recovery.repository import ChunkRef, Repository

PASSPHRASE = "tr0ub4dor & 3 horses"
SMALL_CHUNKS = ChunkerParams(avg_size=4096, min_size=1024, max_size=16384)
FAST_KDF = KdfParams(n=2**10)


def make_repo(path: Path, *, encrypted: bool = True, pack_size: int = 64 * 1024) -> Repository:
    return Repository.init(
        path,
        passphrase=(lambda: PASSPHRASE) if encrypted else None,
        chunker=SMALL_CHUNKS,
        pack_size=pack_size,
        kdf=FAST_KDF,
    )


def reopen(repo: Repository) -> Repository:
    return Repository.open(repo.path, passphrase=(lambda: PASSPHRASE) if repo.encrypted else None)


def store(repo: Repository, data: bytes) -> list[ChunkRef]:
    with repo.writer() as writer:
        return [writer.add(chunk) for chunk in repo.chunks_of(io.BytesIO(data))]


def pack_files(repo: Repository) -> list[Path]:
    return sorted(p for p in (repo.path / "data").glob("*/*") if not p.name.startswith("."))


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    return make_repo(tmp_path / "repo", encrypted=request.param)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=60_000)
    | st.tuples(st.integers(0, 200_000), st.randoms(use_true_random=False)).map(
        lambda n_rng: n_rng[1].randbytes(n_rng[0])
    )
)
def test_stored_chunks_read_back_exactly(repo: Repository, data: bytes) -> None:
    refs = store(repo, data)
    assert sum(ref.size for ref in refs) == len(data)
    fresh = reopen(repo)
    assert b"".join(fresh.read_chunk(ref) for ref in refs) == data
    assert all(fresh.has_chunk(ref.id) for ref in refs)


def test_identical_content_is_stored_once(repo: Repository) -> None:
    data = random.randbytes(150_000)
    first = store(repo, data)
    packs = pack_files(repo)
    with repo.writer() as writer:
        again = [writer.add(c) for c in repo.chunks_of(io.BytesIO(data))]
        assert writer.new_bytes == 0
    assert again == first
    assert pack_files(repo) == packs


def test_an_insertion_shifts_only_nearby_chunks(repo: Repository) -> None:
    data = random.randbytes(200_000)
    before = {ref.id for ref in store(repo, data)}
    edited = data[:100_000] + b"inserted!" + data[100_000:]
    after = [ref.id for ref in store(repo, edited)]
    assert sum(cid in before for cid in after) >= len(after) - 3


def test_chunk_boundaries_depend_on_the_repository_seed(tmp_path: Path) -> None:
    data = random.randbytes(200_000)
    one, two = make_repo(tmp_path / "a"), make_repo(tmp_path / "b")
    sizes_one = [len(c) for c in one.chunks_of(io.BytesIO(data))]
    sizes_two = [len(c) for c in two.chunks_of(io.BytesIO(data))]
    assert sizes_one != sizes_two


def test_default_chunks_average_about_one_mebibyte(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "r", passphrase=None)
    sizes = [len(c) for c in repo.chunks_of(io.BytesIO(random.randbytes(24 << 20)))]
    assert 0.6 * 2**20 < sum(sizes) / len(sizes) < 1.6 * 2**20
    assert max(sizes) <= 8 << 20


def test_compressible_data_is_stored_compressed(repo: Repository) -> None:
    store(repo, b"abc" * 100_000)
    assert sum(p.stat().st_size for p in pack_files(repo)) < 30_000


def test_uncompressed_chunks_when_asked(repo: Repository) -> None:
    with repo.writer() as writer:
        ref = writer.add(b"z" * 20_000, compress=False)
    assert sum(p.stat().st_size for p in pack_files(repo)) > 20_000
    assert reopen(repo).read_chunk(ref.id) == b"z" * 20_000


def test_encrypted_repository_holds_no_plaintext_or_secret(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    marker = b"PLAINTEXT-MARKER-0123456789" * 50
    store(repo, marker)
    repo.write_manifest("b1", {"entries": [{"path": "secret-name.txt", "chunks": []}]})
    for path in repo.path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"PLAINTEXT-MARKER" not in content
            assert b"secret-name" not in content
            assert PASSPHRASE.encode() not in content
            assert repo._keys.data_key.hex().encode() not in content
            assert repo._keys.mac_key.hex().encode() not in content


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(BackupError, match="wrong passphrase"):
        Repository.open(repo.path, passphrase=lambda: "guess")
    with pytest.raises(BackupError, match="passphrase is needed"):
        Repository.open(repo.path)


def test_passphrase_for_a_plain_repository_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", encrypted=False)
    with pytest.raises(BackupError, match="not encrypted"):
        Repository.open(repo.path, passphrase=lambda: "x")


def test_open_without_a_repository(tmp_path: Path) -> None:
    assert not Repository.is_repository(tmp_path)
    with pytest.raises(BackupError, match="no backup repository"):
        Repository.open(tmp_path)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", encrypted=False)
    config = json.loads((repo.path / "config").read_text())
    (repo.path / "config").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(BackupError, match="version 99"):
        Repository.open(repo.path)


def test_init_leaves_other_files_alone_and_refuses_a_repository(tmp_path: Path) -> None:
    # /var/backups (the seed's directory) already holds dpkg's files on Debian.
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "dpkg.status.0").write_text("keep me")
    repo = Repository.init(tmp_path / "x", passphrase=None)
    assert Repository.is_repository(repo.path)
    assert (tmp_path / "x" / "dpkg.status.0").read_text() == "keep me"
    with pytest.raises(BackupError, match="already holds"):
        Repository.init(tmp_path / "x", passphrase=None)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "data").write_text("a file where the layout has a directory")
    with pytest.raises(BackupError, match="already holds"):
        Repository.init(tmp_path / "y", passphrase=None)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"compression_level": 0}, "compression_level"), ({"pack_size": 10}, "pack_size")],
)
def test_init_validates_its_arguments(tmp_path: Path, kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Repository.init(tmp_path / "r", passphrase=None, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_manifests_round_trip(repo: Repository) -> None:
    manifest = {"version": 1, "name": "daily", "entries": [{"path": "a", "chunks": ["00" * 32]}]}
    repo.write_manifest("2026-12-07T10.00.00Z-ab12", manifest)
    repo.write_manifest("b2", {"entries": []})
    fresh = reopen(repo)
    assert fresh.manifest_ids() == ["2026-12-07T10.00.00Z-ab12", "b2"]
    assert fresh.read_manifest("2026-12-07T10.00.00Z-ab12") == manifest
    fresh.delete_manifest("b2")
    assert fresh.manifest_ids() == ["2026-12-07T10.00.00Z-ab12"]
    with pytest.raises(BackupNotFoundError):
        fresh.read_manifest("b2")
    with pytest.raises(BackupNotFoundError):
        fresh.delete_manifest("b2")


@pytest.mark.parametrize("bad", ["../escape", "/abs", "", ".hidden", "a/b", "x" * 200])
def test_manifest_ids_cannot_name_paths(repo: Repository, bad: str) -> None:
    with pytest.raises(BackupNotFoundError):
        repo.write_manifest(bad, {})
    with pytest.raises(BackupNotFoundError):
        repo.read_manifest(bad)


def test_tampered_or_swapped_manifest_is_an_integrity_error(repo: Repository) -> None:
    repo.write_manifest("one", {"entries": [], "n": 1})
    repo.write_manifest("two", {"entries": [], "n": 2})
    snapshots = repo.path / "snapshots"
    # A manifest copied under another id is refused: the seal binds the id.
    (snapshots / "two").write_bytes((snapshots / "one").read_bytes())
    with pytest.raises(IntegrityError, match="backup two"):
        repo.read_manifest("two")
    damaged = bytearray((snapshots / "one").read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    (snapshots / "one").write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="backup one"):
        repo.read_manifest("one")


def test_read_of_an_unknown_chunk_is_an_integrity_error(repo: Repository) -> None:
    with pytest.raises(IntegrityError, match="not in the repository"):
        repo.read_chunk("ab" * 32)


def test_unflushed_writer_failure_keeps_completed_chunks(repo: Repository) -> None:
    data = random.randbytes(100_000)
    refs: list[ChunkRef] = []

    def interrupted_backup() -> None:
        with repo.writer() as writer:
            for chunk in repo.chunks_of(io.BytesIO(data)):
                refs.append(writer.add(chunk))
            raise RuntimeError("source vanished")

    with pytest.raises(RuntimeError):
        interrupted_backup()
    fresh = reopen(repo)
    assert all(fresh.has_chunk(ref.id) for ref in refs)


def test_concurrent_writers_in_threads(repo: Repository) -> None:
    payloads = [random.randbytes(80_000) for _ in range(4)]
    shared = random.randbytes(40_000)
    results: dict[int, list[ChunkRef]] = {}

    def backup(i: int) -> None:
        own = make_handle()
        results[i] = store(own, shared + payloads[i])

    def make_handle() -> Repository:
        return reopen(repo)

    threads = [threading.Thread(target=backup, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fresh = reopen(repo)
    for i, refs in results.items():
        assert b"".join(fresh.read_chunk(r) for r in refs) == shared + payloads[i]
    assert fresh.verify(read_data_fraction=1.0).ok


def test_lock_is_reentrant_and_refuses_upgrade(repo: Repository) -> None:
    with repo.lock(exclusive=True), repo.lock(), repo.lock(exclusive=True):
        pass
    with repo.lock(), pytest.raises(BackupError, match="exclusive"), repo.lock(exclusive=True):
        pass


def test_exclusive_lock_excludes_another_handle(repo: Repository) -> None:
    other = reopen(repo)
    with repo.lock():
        with other.lock():  # shared + shared
            pass
        with pytest.raises(BackupError, match="locked"), other.lock(exclusive=True, timeout=0.1):
            pass
    with other.lock(exclusive=True, timeout=1):
        pass


def test_passphrase_source_is_called_not_stored(tmp_path: Path) -> None:
    calls: list[int] = []

    def source() -> str:
        calls.append(1)
        return PASSPHRASE

    repo = Repository.init(tmp_path / "r", passphrase=source, kdf=FAST_KDF)
    Repository.open(repo.path, passphrase=source)
    assert len(calls) == 2
    assert PASSPHRASE not in repr(repo)


def test_change_passphrase(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    refs = store(repo, b"kept across the change" * 100)
    repo.change_passphrase(lambda: "new one", kdf=FAST_KDF)
    with pytest.raises(BackupError, match="wrong passphrase"):
        Repository.open(repo.path, passphrase=lambda: PASSPHRASE)
    fresh = Repository.open(repo.path, passphrase=lambda: "new one")
    assert b"".join(fresh.read_chunk(r) for r in refs) == b"kept across the change" * 100
    plain = make_repo(tmp_path / "plain", encrypted=False)
    with pytest.raises(BackupError, match="not encrypted"):
        plain.change_passphrase(lambda: "x")


def test_init_killed_before_its_config_can_start_over(tmp_path: Path) -> None:
    first = make_repo(tmp_path / "repo")
    (first.path / "config").unlink()  # killed just before writing config
    (first.path / "keys" / ".tmp-0123").write_bytes(b"half")
    assert not Repository.is_repository(first.path)
    again = make_repo(tmp_path / "repo")
    assert Repository.open(again.path, passphrase=lambda: PASSPHRASE).manifest_ids() == []
    # ...but never over a directory holding anything else.
    (tmp_path / "other" / "snapshots").mkdir(parents=True)
    (tmp_path / "other" / "snapshots" / "b1").write_bytes(b"someone's backup")
    with pytest.raises(BackupError, match="already holds"):
        make_repo(tmp_path / "other")


def test_malformed_config_is_a_backup_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", encrypted=False)
    config = json.loads((repo.path / "config").read_text())
    del config["chunker"]
    (repo.path / "config").write_text(json.dumps(config))
    with pytest.raises(BackupError, match="malformed"):
        Repository.open(repo.path)
    (repo.path / "config").write_text("{not json")
    with pytest.raises(BackupError, match="unreadable"):
        Repository.open(repo.path)
