"""ReadAhead on real repositories: order, content, checks and the memory bound."""

from __future__ import annotations

import hashlib
import io
import random
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import ConfigurationError, IntegrityError
from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.crypto import KdfParams
from sergas_guard.recovery.manifest import Entry
from sergas_guard.recovery.read_ahead import ReadAhead
from sergas_guard.recovery.repository import Repository

# Small chunks and packs, so a few KiB of files make many chunks, runs and packs.
SMALL_CHUNKS = ChunkerParams(avg_size=256, min_size=64, max_size=1024)
MAX_CHUNK = SMALL_CHUNKS.max_size


def back_up(repo: Repository, files: list[tuple[str, bytes]]) -> list[Entry]:
    """Store ``files`` in ``repo`` as a backup would; their entries, a directory first."""
    entries = [Entry(path="d", type="dir", mode=0o755, mtime_ns=0)]
    with repo.lock(), repo.writer() as writer:
        for path, data in files:
            chunks = tuple(writer.add(c).id for c in repo.chunks_of(io.BytesIO(data)))
            entries.append(
                Entry(
                    path=path,
                    type="file",
                    mode=0o644,
                    mtime_ns=0,
                    size=len(data),
                    chunks=chunks,
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        writer.flush()
    return entries


def read_all(ahead: ReadAhead, entries: list[Entry]) -> Iterator[tuple[str, bytes | str]]:
    """Each entry's path with its content, or the message of the error reading it."""
    for entry, content in ahead.entries(iter(entries)):
        try:
            yield entry.path, b"".join(content)
        except IntegrityError as exc:
            yield entry.path, str(exc)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        tmp_path / "repo", passphrase=None, chunker=SMALL_CHUNKS, pack_size=16 * 1024
    )


def corrupt(repo: Repository, chunk_id: str) -> None:
    """Flip one byte in the middle of the chunk's blob, in its real pack file."""
    location = repo.locate(chunk_id)
    pack = repo.path / "data" / location.pack_id[:2] / location.pack_id
    raw = bytearray(pack.read_bytes())
    raw[location.entry.offset + location.entry.length // 2] ^= 0x40
    pack.write_bytes(bytes(raw))


files_strategy = st.lists(
    st.tuples(st.integers(0, 6000), st.integers(0, 3)),  # size, content seed
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(
    files=files_strategy,
    budget=st.integers(1, 8192),
    workers=st.integers(1, 3),
    encrypted=st.booleans(),
)
def test_contents_come_in_order_within_the_budget(
    files: list[tuple[int, int]], budget: int, workers: int, encrypted: bool
) -> None:
    """Whatever the files (empty, duplicated, many chunks), the budget and the workers:
    every entry comes in manifest order with exactly its content, a later entry for the
    same name included, and the decoded data ahead never exceeds the budget by more
    than one chunk."""
    with tempfile.TemporaryDirectory() as scratch:
        repo = Repository.init(
            Path(scratch) / "repo",
            passphrase=(lambda: "pass") if encrypted else None,
            chunker=SMALL_CHUNKS,
            pack_size=8 * 1024,
            kdf=KdfParams(n=2**10),  # cheap: the key derivation is not under test
        )
        # Same names on purpose: the restore target lets the later entry win.
        data = [
            (f"d/f{i % 5}", random.Random(seed).randbytes(size))
            for i, (size, seed) in enumerate(files)
        ]
        entries = back_up(repo, data)
        with ReadAhead(repo, "b", workers=workers, budget=budget) as ahead:
            got = list(read_all(ahead, entries))
            assert ahead.peak_ahead_bytes < budget + MAX_CHUNK
            assert ahead.ahead_bytes == 0
        assert got == [("d", b""), *data]


def test_the_budget_holds_for_a_large_file_among_small_ones(repo: Repository) -> None:
    """A file of hundreds of chunks between many small files, with a budget far
    smaller than the file: never more than the budget plus one chunk is ahead."""
    rng = random.Random(3)
    files = [(f"d/s{i}", rng.randbytes(rng.randint(0, 900))) for i in range(150)]
    files.insert(75, ("d/large", rng.randbytes(400_000)))
    entries = back_up(repo, files)
    assert len(entries[76].chunks) > 300
    with ReadAhead(repo, "b", workers=2, budget=8 * 1024) as ahead:
        got = list(read_all(ahead, entries))
        assert 4 * 1024 < ahead.peak_ahead_bytes < 8 * 1024 + MAX_CHUNK
    assert got[1:] == files


def test_a_damaged_chunk_fails_only_the_files_using_it(repo: Repository) -> None:
    """A flipped byte in one blob, read in one run with its neighbours: the file using
    it fails with its name and backup; the files before and after, in the same pack and
    run, still come whole."""
    rng = random.Random(5)
    files = [(f"d/f{i}", rng.randbytes(60)) for i in range(20)]  # one chunk each
    entries = back_up(repo, files)
    assert all(len(entry.chunks) == 1 for entry in entries[1:])
    locations = {repo.locate(entry.chunks[0]).pack_id for entry in entries[1:]}
    assert len(locations) == 1  # so the victim's neighbours share its run
    corrupt(repo, entries[11].chunks[0])
    with ReadAhead(repo, "backup-7", workers=2, budget=1 << 20) as ahead:
        got = dict(read_all(ahead, entries))
    failed = {path: text for path, text in got.items() if isinstance(text, str)}
    assert list(failed) == ["d/f10"]
    assert "'d/f10'" in failed["d/f10"]
    assert "backup-7" in failed["d/f10"]
    assert all(got[path] == data for path, data in files if path != "d/f10")


def test_a_missing_pack_and_a_missing_chunk_name_the_file(repo: Repository) -> None:
    files = [("d/a", b"a" * 3000), ("d/b", b"b" * 100)]
    entries = back_up(repo, files)
    location = repo.locate(entries[1].chunks[0])
    (repo.path / "data" / location.pack_id[:2] / location.pack_id).unlink()
    unknown = Entry(
        path="d/ghost", type="file", mode=0o644, mtime_ns=0, size=1,
        chunks=("ab" * 32,), sha256="00" * 32,
    )  # fmt: skip
    with ReadAhead(repo, "b") as ahead:
        got = dict(read_all(ahead, [*entries, unknown]))
    assert "'d/a'" in str(got["d/a"])
    assert "missing" in str(got["d/a"])
    assert "'d/ghost'" in str(got["d/ghost"])
    assert "not in the repository" in str(got["d/ghost"])


def test_a_file_that_does_not_match_its_hash_fails_after_its_last_chunk(
    repo: Repository,
) -> None:
    """Sound chunks but a recorded hash or size that differs (a manifest pointing at the
    wrong chunks): the content raises only at its end, so nothing is published."""
    [_, entry] = back_up(repo, [("d/f", b"x" * 5000)])
    for wrong in (
        replace(entry, sha256="00" * 32),
        replace(entry, size=4999),
    ):
        received: list[bytes] = []
        with ReadAhead(repo, "b") as ahead:
            for _, content in ahead.entries([wrong]):
                with pytest.raises(IntegrityError, match="does not match its recorded hash"):
                    received.extend(content)
        assert b"".join(received) == b"x" * 5000


def test_content_read_after_the_next_entry_is_refused(repo: Repository) -> None:
    entries = back_up(repo, [("d/a", b"a" * 3000), ("d/b", b"b" * 10)])
    with ReadAhead(repo, "b") as ahead:
        contents = [content for _, content in ahead.entries(entries)]
        with pytest.raises(RuntimeError, match="after the next entry"):
            next(contents[1])


def test_content_left_unread_is_skipped(repo: Repository) -> None:
    """A caller that stops reading a file midway still gets the next entries whole."""
    files = [("d/big", bytes(range(256)) * 40), ("d/next", b"n" * 700)]
    entries = back_up(repo, files)
    with ReadAhead(repo, "b", budget=2048) as ahead:
        seen = []
        for entry, content in ahead.entries(entries):
            if entry.path == "d/big":
                next(content)
                continue
            seen.append((entry.path, b"".join(content)))
    assert seen == [("d", b""), ("d/next", b"n" * 700)]


def test_bad_settings_are_refused(repo: Repository) -> None:
    with pytest.raises(ConfigurationError) as info:
        ReadAhead(repo, "b", workers=0)
    assert info.value.field == "workers"
    with pytest.raises(ConfigurationError) as info:
        ReadAhead(repo, "b", budget=0)
    assert info.value.field == "budget"


def test_read_run_decodes_each_blob_on_its_own(repo: Repository) -> None:
    """One read for adjacent blobs; a damaged one yields its error, its neighbours their
    plaintext."""
    entries = back_up(repo, [(f"d/f{i}", bytes([i]) * 60) for i in range(4)])  # a chunk each
    assert all(len(entry.chunks) == 1 for entry in entries[1:])
    locations = [repo.locate(e.chunks[0]) for e in entries[1:]]
    assert len({loc.pack_id for loc in locations}) == 1
    corrupt(repo, entries[2].chunks[0])
    results = repo.read_run(locations[0].pack_id, [loc.entry for loc in locations])
    assert results[0] == bytes([0]) * 60
    assert isinstance(results[1], IntegrityError)
    assert results[2:] == [bytes([2]) * 60, bytes([3]) * 60]
    with pytest.raises(ValueError, match="adjacent"):
        repo.read_run(locations[0].pack_id, [locations[0].entry, locations[2].entry])
