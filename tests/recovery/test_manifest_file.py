"""The streamed manifest format on real files: round trips, header-only reads, and
every kind of damage to a segment (flip, truncate, drop, reorder, swap) refused as an
IntegrityError naming the backup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import BackupError, BackupNotFoundError, IntegrityError
from sergas_guard.recovery import manifest_file
from sergas_guard.recovery.atomic import TEMP_PREFIX
from sergas_guard.recovery.crypto import KdfParams
from sergas_guard.recovery.repository import Repository

ROOT = Path(__file__).resolve().parents[2]
FAST_KDF = KdfParams(n=2**10, r=8, p=1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repository:
    """One encrypted repository for the module (manifests have distinct ids)."""
    return Repository.init(
        tmp_path_factory.mktemp("manifests") / "repo", passphrase=lambda: "pw", kdf=FAST_KDF
    )


def _entries(count: int) -> list[dict[str, Any]]:
    return [
        {"path": f"d/f{n:05}", "type": "file", "mode": 0o644, "chunks": [], "n": n}
        for n in range(count)
    ]


def _write(repo: Repository, backup_id: str, entries: list[dict[str, Any]], **sizes: int) -> None:
    with repo.manifest_writer(backup_id) as writer:
        writer._segment_entries = sizes.get("segment_entries", writer._segment_entries)
        writer._segment_bytes = sizes.get("segment_bytes", writer._segment_bytes)
        for entry in entries:
            writer.add(entry)
        writer.commit({"backup_id": backup_id, "note": "header"})


def _segments(repo: Repository, backup_id: str) -> list[tuple[int, int]]:
    path = repo.path / "snapshots" / backup_id
    with open(path, "rb") as stream:
        layout = manifest_file._read_layout(stream, repo._sealer, backup_id)
    return [(offset, length) for offset, length, _, _ in layout.segments]


_counter = iter(range(1_000_000))


def _fresh_id() -> str:
    return f"b{next(_counter):06}"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(0, 60),
    per_segment=st.integers(1, 9),
    names=st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=5),
)
def test_entries_round_trip_in_order_across_segments(
    repo: Repository, count: int, per_segment: int, names: list[str]
) -> None:
    backup_id = _fresh_id()
    entries = _entries(count)
    for n, name in enumerate(names):  # odd text survives: surrogates, NUL, newlines
        entries.append({"path": name, "type": "dir", "mode": 0o755, "odd": n})
    _write(repo, backup_id, entries, segment_entries=per_segment)
    header = repo.read_manifest_header(backup_id)
    assert header.document == {"backup_id": backup_id, "note": "header"}
    assert header.entry_count == len(entries)
    assert header.format == 2
    assert list(repo.manifest_entries(backup_id)) == entries
    expected_segments = -(-len(entries) // per_segment)
    assert len(_segments(repo, backup_id)) == expected_segments
    assert repo.read_manifest(backup_id) == {**header.document, "entries": entries}


def test_segments_close_at_the_byte_bound(repo: Repository) -> None:
    backup_id = _fresh_id()
    entries = [{"path": f"p{n}", "blob": "x" * 1000} for n in range(50)]
    _write(repo, backup_id, entries, segment_bytes=10_000)
    # 10 entries of ~1 KiB reach 10 kB: five segments, none much over the bound
    assert len(_segments(repo, backup_id)) == 5
    assert list(repo.manifest_entries(backup_id)) == entries


def test_the_header_is_read_without_touching_a_segment(repo: Repository) -> None:
    backup_id = _fresh_id()
    _write(repo, backup_id, _entries(30), segment_entries=10)
    path = repo.path / "snapshots" / backup_id
    data = bytearray(path.read_bytes())
    for offset, length in _segments(repo, backup_id):
        data[offset : offset + length] = bytes(length)  # every segment zeroed
    path.write_bytes(bytes(data))
    assert repo.read_manifest_header(backup_id).entry_count == 30
    with pytest.raises(IntegrityError, match=f"backup {backup_id} is damaged.*segment 1 of 3"):
        next(iter(repo.manifest_entries(backup_id)))


def _read_all(repo: Repository, backup_id: str) -> None:
    repo.read_manifest_header(backup_id)
    list(repo.manifest_entries(backup_id))


def _damaged(repo: Repository, backup_id: str) -> None:
    """Reading the header and then every entry raises IntegrityError naming the backup."""
    with pytest.raises(IntegrityError, match=backup_id):
        _read_all(repo, backup_id)


def _rewrite(repo: Repository, backup_id: str, data: bytes) -> None:
    (repo.path / "snapshots" / backup_id).write_bytes(data)


_SHARE = st.floats(0, 1, exclude_max=True)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(share=_SHARE, flip=st.integers(1, 255))
def test_any_flipped_byte_is_an_integrity_error(repo: Repository, share: float, flip: int) -> None:
    backup_id = _fresh_id()
    _write(repo, backup_id, _entries(25), segment_entries=7)
    blob = bytearray((repo.path / "snapshots" / backup_id).read_bytes())
    blob[int(share * len(blob))] ^= flip
    _rewrite(repo, backup_id, bytes(blob))
    _damaged(repo, backup_id)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(share=_SHARE)
def test_any_truncation_is_an_integrity_error(repo: Repository, share: float) -> None:
    backup_id = _fresh_id()
    _write(repo, backup_id, _entries(25), segment_entries=7)
    blob = (repo.path / "snapshots" / backup_id).read_bytes()
    _rewrite(repo, backup_id, blob[: int(share * len(blob))])
    _damaged(repo, backup_id)


def test_a_dropped_segment_is_an_integrity_error(repo: Repository) -> None:
    backup_id = _fresh_id()
    _write(repo, backup_id, _entries(30), segment_entries=10)
    blob = (repo.path / "snapshots" / backup_id).read_bytes()
    offset, length = _segments(repo, backup_id)[1]
    _rewrite(repo, backup_id, blob[:offset] + blob[offset + length :])
    _damaged(repo, backup_id)


def test_reordered_segments_are_an_integrity_error(repo: Repository) -> None:
    backup_id = _fresh_id()
    _write(repo, backup_id, _entries(20), segment_entries=10)
    blob = (repo.path / "snapshots" / backup_id).read_bytes()
    (o1, n1), (o2, n2) = _segments(repo, backup_id)
    swapped = blob[:o1] + blob[o2 : o2 + n2] + blob[o1 : o1 + n1] + blob[o2 + n2 :]
    _rewrite(repo, backup_id, swapped)
    with pytest.raises(IntegrityError, match=f"{backup_id}.*segment 1 of 2 does not match"):
        list(repo.manifest_entries(backup_id))


def test_a_segment_of_another_backup_is_an_integrity_error(repo: Repository) -> None:
    ours, theirs = _fresh_id(), _fresh_id()
    _write(repo, ours, _entries(20), segment_entries=10)
    _write(repo, theirs, _entries(20), segment_entries=10)
    blob = (repo.path / "snapshots" / ours).read_bytes()
    other = (repo.path / "snapshots" / theirs).read_bytes()
    (offset, length), _ = _segments(repo, ours)
    (their_offset, their_length), _ = _segments(repo, theirs)
    assert length == their_length  # same plaintext, same size: only the seal differs
    spliced = blob[:offset] + other[their_offset : their_offset + length] + blob[offset + length :]
    _rewrite(repo, ours, spliced)
    _damaged(repo, ours)


def test_a_manifest_renamed_to_another_id_does_not_open(repo: Repository) -> None:
    original, renamed = _fresh_id(), _fresh_id()
    _write(repo, original, _entries(3))
    os.rename(repo.path / "snapshots" / original, repo.path / "snapshots" / renamed)
    _damaged(repo, renamed)


def test_an_uncommitted_writer_leaves_no_manifest(repo: Repository) -> None:
    backup_id = _fresh_id()

    def fail_part_way() -> None:
        with repo.manifest_writer(backup_id) as writer:
            for entry in _entries(50):
                writer.add(entry)
            raise RuntimeError("the backup failed")

    with pytest.raises(RuntimeError):
        fail_part_way()
    assert backup_id not in repo.manifest_ids()
    assert not [p for p in (repo.path / "snapshots").iterdir() if p.name.startswith(TEMP_PREFIX)]
    with pytest.raises(BackupNotFoundError):
        repo.read_manifest_header(backup_id)


def test_unserialisable_entries_are_a_backup_error(repo: Repository) -> None:
    writer = repo.manifest_writer(_fresh_id())
    with writer, pytest.raises(BackupError, match="not JSON-serialisable"):
        writer.add({"path": b"bytes"})


WRITER_IN_A_CHILD = """
import sys
from sergas_guard.recovery.repository import Repository
repo = Repository.open(sys.argv[1], passphrase=lambda: "pw")
with repo.manifest_writer(sys.argv[2]) as writer:
    print("ready", flush=True)
    for n in range(int(sys.argv[3])):
        writer.add({"path": f"d/f{n:07}", "type": "file", "mode": 420, "chunks": []})
    writer.commit({"backup_id": sys.argv[2]})
print("done", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3, 0.6])
def test_kill_9_during_a_streamed_write_leaves_no_manifest_or_a_whole_one(
    tmp_path: Path, delay: float
) -> None:
    repo = Repository.init(tmp_path / "repo", passphrase=lambda: "pw", kdf=FAST_KDF)
    backup_id = _fresh_id()
    with subprocess.Popen(
        [sys.executable, "-c", WRITER_IN_A_CHILD, str(repo.path), backup_id, "300000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    if backup_id in repo.manifest_ids():  # the write finished before the kill
        assert sum(1 for _ in repo.manifest_entries(backup_id)) == 300000
    else:
        with pytest.raises(BackupNotFoundError):
            repo.read_manifest_header(backup_id)
    # What the kill left is a temporary file, which garbage collection removes.
    repo.collect_garbage()
    assert not [p for p in (repo.path / "snapshots").iterdir() if p.name.startswith(TEMP_PREFIX)]
