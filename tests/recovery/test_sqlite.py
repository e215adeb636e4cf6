"""SQLiteBackupStrategy against real SQLite files, with a real writer process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import BackupError, ConfigurationError, IntegrityError
from sergas_guard.recovery.sqlite import SQLiteBackupStrategy
from sergas_guard.recovery.strategy import BackupStrategy

# The writer: one transaction per event, each adding event i and setting the counter
# to i, so any consistent copy holds events 1..n and counter n, with intact payloads.
WRITER = """
import hashlib, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
i = db.execute("SELECT n FROM counter").fetchone()[0]
while True:
    i += 1
    payload = hashlib.sha256(str(i).encode()).hexdigest() * 4
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO events (id, payload) VALUES (?, ?)", (i, payload))
    db.execute("UPDATE counter SET n = ?", (i,))
    db.execute("COMMIT")
    time.sleep(0.0005)  # a breath between commits, or rollback-journal readers starve
"""


def payload(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest() * 4


def make_database(path: Path, journal_mode: str, ballast_rows: int = 2000) -> None:
    """A database with ~20 MB of ballast, so that a copy takes long enough to overlap."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    db.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    db.execute("INSERT INTO counter VALUES (0)")
    db.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, data BLOB)")
    db.executemany(
        "INSERT INTO ballast (data) VALUES (?)",
        ((os.urandom(10_000),) for _ in range(ballast_rows)),
    )
    db.commit()
    db.close()


def events_written(path: Path) -> int:
    db = sqlite3.connect(path, timeout=60)
    try:
        return int(db.execute("SELECT n FROM counter").fetchone()[0])
    finally:
        db.close()


@contextlib.contextmanager
def writer_process(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 20
        while events_written(path) < 50:  # it is really writing before the test goes on
            assert process.poll() is None, "the writer died"
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.01)
        yield process
    finally:
        process.kill()
        process.wait()


def assert_consistent(copy: Path) -> int:
    """The copy passes integrity_check and holds events 1..n with counter n; returns n."""
    db = sqlite3.connect(f"file:{copy}?immutable=1", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n = int(db.execute("SELECT n FROM counter").fetchone()[0])
        rows = db.execute("SELECT id, payload FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    assert [row[0] for row in rows] == list(range(1, n + 1))
    assert all(text == payload(i) for i, text in rows)
    return n


def test_it_is_a_backup_strategy() -> None:
    strategy = SQLiteBackupStrategy(compress=False)
    assert isinstance(strategy, BackupStrategy)
    assert (strategy.kind, strategy.compress, strategy.restores_in_place) == (
        "sqlite",
        False,
        False,
    )
    assert not strategy.exclude("app.sqlite")


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
async def test_copies_of_a_database_being_written_are_consistent_prefixes(
    tmp_path: Path, journal_mode: str
) -> None:
    source = tmp_path / "app.db"
    make_database(source, journal_mode)
    strategy = SQLiteBackupStrategy()
    seen: list[int] = []
    with writer_process(source):
        for attempt in range(3):
            staging = tmp_path / f"staging-{attempt}"
            staging.mkdir()
            before = events_written(source)
            staged = await strategy.stage(str(source), staging)
            after = events_written(source)
            assert staged == staging
            assert [p.name for p in staging.iterdir()] == ["app.sqlite"]
            n = assert_consistent(staging / "app.sqlite")
            assert before <= n <= after
            seen.append(n)
    # The writer kept going between and after the copies: they were of a live database.
    assert seen == sorted(seen)
    assert events_written(source) > seen[-1]
    # The source is still the writer's database, intact, and in its own journal mode.
    assert assert_consistent(source) >= seen[-1]
    db = sqlite3.connect(source)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == journal_mode
    db.close()


async def test_restore_checks_and_places_the_database(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    make_database(source, "wal", ballast_rows=10)
    with writer_process(source):
        staging = tmp_path / "staging"
        staging.mkdir()
        await SQLiteBackupStrategy().stage(str(source), staging)
    destination = tmp_path / "restored" / "app.db"
    destination.parent.mkdir()
    await SQLiteBackupStrategy().finish_restore(staging, str(destination))
    assert assert_consistent(destination) > 0
    assert sorted(p.name for p in destination.parent.iterdir()) == ["app.db"]
    # A single file may be given instead of its tree.
    again = tmp_path / "again.db"
    await SQLiteBackupStrategy().finish_restore(staging / "app.sqlite", str(again))
    assert again.read_bytes() == destination.read_bytes()


@given(
    rows=st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(), st.binary(max_size=3000)),
        max_size=40,
    )
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_stage_then_restore_gives_back_every_row(
    rows: list[tuple[int, str, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = sqlite3.connect(root / "source.db")
        db.execute("CREATE TABLE t (k INTEGER, s TEXT, b BLOB)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        db.commit()
        db.close()
        (root / "staging").mkdir()
        strategy = SQLiteBackupStrategy()
        staged = await strategy.stage(str(root / "source.db"), root / "staging")
        await strategy.finish_restore(staged, str(root / "restored.db"))
        db = sqlite3.connect(root / "restored.db")
        assert db.execute("SELECT k, s, b FROM t ORDER BY rowid").fetchall() == rows
        db.close()


def prepared_source(tmp_path: Path) -> Path:
    """app.db with 3000 indexed events; returns an empty staging directory."""
    source = tmp_path / "app.db"
    make_database(source, "delete", ballast_rows=0)
    db = sqlite3.connect(source)
    db.execute("CREATE INDEX by_payload ON events (payload)")
    db.executemany("INSERT INTO events VALUES (?, ?)", ((i, payload(i)) for i in range(1, 3000)))
    db.commit()
    db.close()
    staging = tmp_path / "staging"
    staging.mkdir()
    return staging


async def test_a_corrupt_restored_database_is_never_placed(tmp_path: Path) -> None:
    staging = prepared_source(tmp_path)
    await SQLiteBackupStrategy().stage(str(tmp_path / "app.db"), staging)
    copy = staging / "app.sqlite"
    data = bytearray(copy.read_bytes())
    page = 4096
    for number in range(2, 6):  # b-tree page headers (the file header, page 1, stays valid)
        for offset in range((number - 1) * page, (number - 1) * page + 12):
            data[offset] ^= 0x5A
    copy.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        await SQLiteBackupStrategy().finish_restore(staging, str(out / "app.db"))
    assert list(out.iterdir()) == []


def occupy(destination: Path, occupant: str) -> None:
    if occupant == "file":
        destination.write_bytes(b"the live database")
    elif occupant == "dangling-symlink":
        destination.symlink_to(destination.parent / "nowhere")
    else:
        Path(f"{destination}-{occupant}").write_bytes(b"stale journal")


def listing(directory: Path) -> list[tuple[str, bool]]:
    return sorted((p.name, p.is_symlink()) for p in directory.iterdir())


@pytest.mark.parametrize("occupant", ["file", "dangling-symlink", "wal", "journal"])
async def test_restore_never_replaces_what_is_at_the_destination(
    tmp_path: Path, occupant: str
) -> None:
    staging = prepared_source(tmp_path)
    await SQLiteBackupStrategy().stage(str(tmp_path / "app.db"), staging)
    destination = tmp_path / "live.db"
    occupy(destination, occupant)
    before = listing(tmp_path)
    with pytest.raises(BackupError, match="exists"):
        await SQLiteBackupStrategy().finish_restore(staging, str(destination))
    assert listing(tmp_path) == before
    if occupant == "file":
        assert destination.read_bytes() == b"the live database"


async def test_restore_needs_exactly_one_database_and_an_existing_directory(
    tmp_path: Path,
) -> None:
    staging = prepared_source(tmp_path)
    await SQLiteBackupStrategy().stage(str(tmp_path / "app.db"), staging)
    with pytest.raises(BackupError, match="does not exist"):
        await SQLiteBackupStrategy().finish_restore(staging, str(tmp_path / "no" / "x.db"))
    (staging / "other.sqlite").write_bytes((staging / "app.sqlite").read_bytes())
    with pytest.raises(BackupError, match="holds 2"):
        await SQLiteBackupStrategy().finish_restore(staging, str(tmp_path / "x.db"))


async def test_a_missing_or_foreign_source_is_refused_and_never_created(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    missing = tmp_path / "missing.db"
    with pytest.raises(BackupError, match="cannot read"):
        await SQLiteBackupStrategy().stage(str(missing), tmp_path / "staging")
    assert not missing.exists()
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database, just some text that is long enough")
    with pytest.raises(BackupError, match="not an SQLite database"):
        await SQLiteBackupStrategy().stage(str(foreign), tmp_path / "staging")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"compress": "yes"}, "compress"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": float("nan")}, "busy_timeout"),
        ({"busy_timeout": True}, "busy_timeout"),
    ],
)
def test_bad_arguments_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SQLiteBackupStrategy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
async def test_the_source_permissions_travel_with_the_copy(tmp_path: Path, mode: int) -> None:
    prepared_source(tmp_path)
    source = tmp_path / "app.db"
    source.chmod(mode)
    await SQLiteBackupStrategy().stage(str(source), tmp_path / "staging")
    assert (tmp_path / "staging" / "app.sqlite").stat().st_mode & 0o777 == mode
    await SQLiteBackupStrategy().finish_restore(tmp_path / "staging", str(tmp_path / "back.db"))
    assert (tmp_path / "back.db").stat().st_mode & 0o777 == mode
