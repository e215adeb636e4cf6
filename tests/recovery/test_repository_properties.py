"""Invariants of the repository under any sequence of backups, deletions and collections."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.crypto import AesGcmSealer, ChecksumSealer, RepositoryKeys, Sealer
from sergas_guard.recovery.packs import PackBuilder, read_header
from sergas_guard.recovery.repository import Repository

SMALL_CHUNKS = ChunkerParams(avg_size=256, min_size=64, max_size=1024)

# A backup is a few "files" drawn from a small vocabulary of blocks, so backups share
# chunks with each other and deletions leave packs half alive.
BLOCKS = [bytes([i]) * 700 + i.to_bytes(2, "big") * 200 for i in range(12)]
files = st.lists(st.integers(0, len(BLOCKS) - 1), min_size=1, max_size=6).map(
    lambda picks: b"".join(BLOCKS[i] for i in picks)
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("backup"), st.lists(files, min_size=1, max_size=3)),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("gc"), st.booleans()),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(steps=steps)
def test_collection_keeps_exactly_what_manifests_name(
    steps: list[tuple[str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        repo = Repository.init(
            Path(scratch) / "repo", passphrase=None, chunker=SMALL_CHUNKS, pack_size=2048
        )
        expected: dict[str, list[bytes]] = {}
        for number, (action, arg) in enumerate(steps):
            if action == "backup":
                assert isinstance(arg, list)
                with repo.lock(), repo.writer() as writer:
                    entries = []
                    for i, data in enumerate(arg):
                        chunks = [writer.add(c).id for c in repo.chunks_of(io.BytesIO(data))]
                        entries.append({"path": f"f{i}", "chunks": chunks})
                    writer.flush()
                    repo.write_manifest(f"b{number}", {"entries": entries})
                expected[f"b{number}"] = arg
            elif action == "delete" and expected:
                assert isinstance(arg, int)
                victim = sorted(expected)[arg % len(expected)]
                repo.delete_manifest(victim)
                del expected[victim]
            elif action == "gc":
                report = repo.collect_garbage(dry_run=bool(arg))
                assert report.dry_run is bool(arg)

        repo.collect_garbage()
        fresh = Repository.open(repo.path)
        assert fresh.manifest_ids() == sorted(expected)
        named: set[str] = set()
        for backup_id, contents in expected.items():
            entries = fresh.read_manifest(backup_id)["entries"]
            for entry, data in zip(entries, contents, strict=True):
                assert b"".join(fresh.read_chunk(c) for c in entry["chunks"]) == data
                named.update(entry["chunks"])
        stored = {cid for cid, _ in fresh._index.locations()}
        assert stored == named  # nothing unreferenced survives a collection
        assert fresh.verify(read_data_fraction=1.0).ok
        assert not fresh.orphan_packs


@settings(max_examples=40, deadline=None)
@given(
    blobs=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6),
    cut=st.integers(min_value=1),
    encrypted=st.booleans(),
)
def test_a_truncated_pack_is_never_read_as_valid(
    blobs: list[bytes], cut: int, encrypted: bool
) -> None:
    keys = RepositoryKeys.generate()
    sealer: Sealer = AesGcmSealer(keys.data_key) if encrypted else ChecksumSealer(keys.mac_key)
    builder = PackBuilder()
    for number, blob in enumerate(blobs):
        builder.add(f"{number:064x}", blob, len(blob))
    _, parts, entries = builder.finish(sealer)
    content = b"".join(parts)
    with tempfile.TemporaryDirectory() as scratch:
        pack = Path(scratch) / "pack"
        pack.write_bytes(content)
        assert read_header(pack, sealer) == entries
        pack.write_bytes(content[: len(content) - 1 - cut % len(content)])
        with pytest.raises(IntegrityError):
            read_header(pack, sealer)
