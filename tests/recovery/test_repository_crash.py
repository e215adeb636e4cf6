"""kill -9 at every kind of point during a backup and a garbage collection.

A child process runs a real backup (or collection) on a real repository and SIGKILLs
itself at its n-th durable-I/O step (a write of a temporary file, where it first writes
half the bytes, an fsync, a rename, an unlink). After each kill the repository must
open, verify with every byte read, and still restore every backup completed before;
a retried backup must re-use the chunks the killed one already stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from sergas_guard.recovery.chunking import ChunkerParams
from sergas_guard.recovery.crypto import KdfParams
from sergas_guard.recovery.repository import Repository

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "kill -9 proof"
KILL_POINTS = 14

CHILD = textwrap.dedent(
    """
    import hashlib, io, json, os, pathlib, random, signal, sys

    repo_path, mode, kill_at, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    events = 0

    def hit():
        global events
        events += 1
        return events == kill_at

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_fsync, real_replace, real_unlink = os.write, os.fsync, os.replace, os.unlink

    def write(fd, data):
        if hit():
            real_write(fd, bytes(data)[: len(data) // 2])
            die()
        return real_write(fd, data)

    def fsync(fd):
        if hit():
            die()
        return real_fsync(fd)

    def replace(*args, **kwargs):
        if hit():
            die()
        return real_replace(*args, **kwargs)

    def unlink(*args, **kwargs):
        if hit():
            die()
        return real_unlink(*args, **kwargs)

    os.write, os.fsync, os.replace, os.unlink = write, fsync, replace, unlink

    from sergas_guard.recovery.repository import Repository

    repo = Repository.open(pathlib.Path(repo_path), passphrase=lambda: "kill -9 proof")
    if mode == "backup":
        rounds = 1 if seed >= 0 else 10**6
        for n in range(rounds):
            data = random.Random(abs(seed) + n).randbytes(120_000)
            with repo.lock(), repo.writer() as writer:
                refs = [writer.add(c) for c in repo.chunks_of(io.BytesIO(data))]
                writer.flush()
                manifest = {
                    "entries": [{"path": "f", "chunks": [r.id for r in refs]}],
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                repo.write_manifest(f"b{abs(seed) + n}", manifest)
            print(json.dumps({"new_bytes": writer.new_bytes, "events": events}), flush=True)
    else:
        repo.collect_garbage()
        print(json.dumps({"events": events}))
    """
)


def run_child(repo: Path, mode: str, kill_at: int, seed: int) -> dict[str, Any] | None:
    """The child's report, or None when it was killed."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo), mode, str(kill_at), str(seed)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if done.returncode == -signal.SIGKILL:
        return None
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def restore(repo: Repository, backup_id: str) -> bytes:
    manifest = repo.read_manifest(backup_id)
    data = b"".join(repo.read_chunk(cid) for cid in manifest["entries"][0]["chunks"])
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    return data


def assert_sound(path: Path, completed: list[str]) -> Repository:
    repo = Repository.open(path, passphrase=lambda: PASSPHRASE)
    report = repo.verify(read_data_fraction=1.0)
    assert report.ok, report.problems
    for backup_id in completed:
        restore(repo, backup_id)
    for backup_id in repo.manifest_ids():  # a manifest on disk is a complete backup
        restore(repo, backup_id)
    return repo


def kill_points(total: int, rng: random.Random) -> list[int]:
    """The first and last steps plus a sample of the rest."""
    edges = {1, 2, 3, total - 2, total - 1, total}
    middle = set(rng.sample(range(4, total - 2), min(KILL_POINTS, max(0, total - 6))))
    return sorted(p for p in edges | middle if 1 <= p <= total)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(
        path,
        passphrase=lambda: PASSPHRASE,
        chunker=ChunkerParams(avg_size=4096, min_size=1024, max_size=16384),
        pack_size=16 * 1024,
        kdf=KdfParams(n=2**10),
    )
    return path


@pytest.mark.slow
def test_kill_9_during_backup_and_gc_loses_nothing(repo_path: Path) -> None:
    rng = random.Random(13)
    first = run_child(repo_path, "backup", 0, 1)
    assert first is not None
    total = first["events"]
    assert total > 20  # many packs: the loop covers pack, index and manifest writes

    for attempt, kill_at in enumerate(kill_points(total, rng)):
        # Fresh data each time, so every attempt takes every step up to ``kill_at``.
        report = run_child(repo_path, "backup", kill_at, 100 + attempt)
        # Other data may cut into fewer chunks than the first run's (and finish first).
        assert report is None or report["events"] < kill_at
        assert_sound(repo_path, ["b1"])

    # A backup killed halfway, retried, re-uses the packs the killed attempt stored.
    assert run_child(repo_path, "backup", total // 2, 2) is None
    assert Repository.open(repo_path, passphrase=lambda: PASSPHRASE).orphan_packs
    retried = run_child(repo_path, "backup", 0, 2)
    assert retried is not None
    assert 0 < retried["new_bytes"] < 120_000  # it did not start over
    assert_sound(repo_path, ["b1", "b2"])

    # Now collect b1's chunks, killed at every kind of step of the collection.
    repo = Repository.open(repo_path, passphrase=lambda: PASSPHRASE)
    repo.delete_manifest("b1")
    run_child(repo_path, "backup", 0, 3)
    dry = repo.collect_garbage(dry_run=True)
    assert dry.chunks_removed > 0
    gc_events = None
    for kill_at in range(1, 200, 3):
        if run_child(repo_path, "gc", kill_at, 0) is not None:
            gc_events = kill_at
            break
        assert_sound(repo_path, ["b2", "b3"])
    assert gc_events is not None
    assert gc_events > 3
    repo = assert_sound(repo_path, ["b2", "b3"])
    assert repo.collect_garbage(dry_run=True).chunks_removed == 0


@pytest.mark.slow
def test_kill_9_at_random_times(repo_path: Path) -> None:
    rng = random.Random(7)
    completed: list[str] = []
    for _ in range(3):
        seed = str(-rng.randrange(10**6))  # negative: back up again and again until killed
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(repo_path), "backup", "0", seed],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        ) as process:
            time.sleep(rng.uniform(0.3, 0.9))
            process.kill()
            process.wait()
        repo = assert_sound(repo_path, completed)
        completed = repo.manifest_ids()
    assert completed


def test_readme_example_runs(tmp_path: Path) -> None:
    """The smallest end-to-end use: chunks in, manifest, read back after reopening."""
    repo = Repository.init(tmp_path / "r", passphrase=lambda: "pw", kdf=KdfParams(n=2**10))
    with repo.lock(), repo.writer() as writer:
        refs = [writer.add(c) for c in repo.chunks_of(io.BytesIO(b"hello " * 1000))]
        writer.flush()
        repo.write_manifest("b1", {"entries": [{"path": "f", "chunks": [r.id for r in refs]}]})
    again = Repository.open(tmp_path / "r", passphrase=lambda: "pw")
    chunks = again.read_manifest("b1")["entries"][0]["chunks"]
    assert b"".join(again.read_chunk(c) for c in chunks) == b"hello " * 1000


def test_concurrent_backups_and_collections_in_processes(repo_path: Path) -> None:
    """Backups in three processes while two others collect garbage: every backup that
    completes restores (collection never takes a running backup's fresh chunks)."""
    run_child(repo_path, "backup", 0, 900)
    Repository.open(repo_path, passphrase=lambda: PASSPHRASE).delete_manifest("b900")
    jobs = [("backup", 901), ("gc", 0), ("backup", 902), ("gc", 0), ("backup", 903)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(repo_path), mode, "0", str(seed)],
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for mode, seed in jobs
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0
    repo = assert_sound(repo_path, ["b901", "b902", "b903"])
    assert repo.manifest_ids() == ["b901", "b902", "b903"]
    assert repo.collect_garbage(dry_run=True).chunks_removed == 0
