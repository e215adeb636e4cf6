"""PostgresBackupStrategy against a real PostgreSQL: live dumps, restores, credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from sergas_guard.errors import BackupError, ConfigurationError
from sergas_guard.recovery.postgres import PostgresBackupStrategy
from sergas_guard.recovery.strategy import BackupStrategy
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres(postgres_session: PostgresServer) -> PostgresServer:
    return postgres_session


def strategy_for(server: PostgresServer, **kwargs: Any) -> PostgresBackupStrategy:
    return PostgresBackupStrategy(
        pg_dump=server.bindir / "pg_dump", pg_restore=server.bindir / "pg_restore", **kwargs
    )


def new_name() -> str:
    return f"sg_{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def create_shop(server: PostgresServer, rows: int = 100_000) -> str:
    """A database with `rows` orders and a ledger whose total tracks them; its name."""
    name = new_name()
    async with connected(server.dsn()) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    async with connected(server.dsn(database=name)) as db:
        await db.execute(
            """
            CREATE TABLE orders (id bigint PRIMARY KEY, amount int NOT NULL, note text);
            CREATE TABLE ledger (one int PRIMARY KEY, last_id bigint NOT NULL, total bigint);
            CREATE INDEX orders_amount ON orders (amount);
            """
        )
        await db.execute(
            "INSERT INTO orders SELECT i, i % 997, md5(i::text) FROM generate_series(1, $1) i",
            rows,
        )
        await db.execute(
            "INSERT INTO ledger SELECT 1, $1::bigint, (SELECT sum(amount) FROM orders)", rows
        )
    return name


async def write_orders(dsn: str, stop: asyncio.Event, writing: asyncio.Event) -> None:
    """One transaction per order: the order, and the ledger moved to it. ``writing`` is
    set after the first 50 orders."""
    async with connected(dsn) as db:
        i = first = await db.fetchval("SELECT last_id FROM ledger")
        while not stop.is_set():
            if i - first == 50:
                writing.set()
            i += 1
            async with db.transaction():
                await db.execute(
                    "INSERT INTO orders VALUES ($1::bigint, $2::int, md5($1::bigint::text))",
                    i,
                    i % 997,
                )
                await db.execute("UPDATE ledger SET last_id = $1, total = total + $2", i, i % 997)


async def last_order(dsn: str) -> int:
    async with connected(dsn) as db:
        return int(await db.fetchval("SELECT last_id FROM ledger"))


async def orders_up_to(dsn: str, last: int) -> list[tuple[int, int, str]]:
    async with connected(dsn) as db:
        rows = await db.fetch(
            "SELECT id, amount, note FROM orders WHERE id <= $1 ORDER BY id", last
        )
    return [(r["id"], r["amount"], r["note"]) for r in rows]


def test_it_is_a_backup_strategy(postgres: PostgresServer) -> None:
    strategy = strategy_for(postgres, compress=False)
    assert isinstance(strategy, BackupStrategy)
    assert (strategy.kind, strategy.compress, strategy.restores_in_place) == (
        "postgres",
        False,
        False,
    )
    assert strategy.psql == postgres.bindir / "psql"  # the one beside pg_restore
    assert not strategy.exclude("dump.pgdump")


async def test_a_dump_of_a_database_being_written_restores_to_one_moment(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    source = postgres.dsn(database=await create_shop(postgres))
    strategy = strategy_for(postgres)
    stop, writing = asyncio.Event(), asyncio.Event()
    writer = asyncio.create_task(write_orders(source, stop, writing))
    started = asyncio.create_task(writing.wait())
    try:
        await asyncio.wait([writer, started], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert started.done(), writer.exception() if writer.done() else "the writer is stuck"
        before = await last_order(source)
        staged = await strategy.stage(source, tmp_path)
        after = await last_order(source)
    finally:
        stop.set()
        started.cancel()
        await writer
    assert staged == tmp_path
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["dump.pgdump"]
    assert after > before  # the dump ran while orders kept coming

    restored_name = new_name()
    await strategy.finish_restore(tmp_path, postgres.dsn(database=restored_name))
    restored = postgres.dsn(database=restored_name)
    async with connected(restored) as db:
        last = int(await db.fetchval("SELECT last_id FROM ledger"))
        total = await db.fetchval("SELECT total FROM ledger")
        assert total == await db.fetchval("SELECT sum(amount) FROM orders")
        assert await db.fetchval("SELECT count(*) FROM orders") == last
        assert await db.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_amount'"
        )
    assert before <= last <= after
    # Exactly the source's orders up to that moment, none after it.
    assert await orders_up_to(restored, last + 10**9) == await orders_up_to(source, last)
    assert await last_order(source) > last


async def test_restore_creates_or_reuses_an_empty_database_and_refuses_a_full_one(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    source = postgres.dsn(database=await create_shop(postgres, rows=10))
    strategy = strategy_for(postgres)
    await strategy.stage(source, tmp_path)
    empty = new_name()
    async with connected(postgres.dsn()) as admin:
        await admin.execute(f'CREATE DATABASE "{empty}"')
    # libpq keyword form, into the empty database: it is used.
    keywords = (
        f"host=127.0.0.1 port={postgres.port} user={postgres.user} "
        f"password='{postgres.password}' dbname={empty}"
    )
    await strategy.finish_restore(tmp_path / "dump.pgdump", keywords)
    assert await orders_up_to(postgres.dsn(database=empty), 10**9) == await orders_up_to(
        source, 10**9
    )
    # Now it holds tables: a second restore into it is refused, nothing changes.
    async with connected(postgres.dsn(database=empty)) as db:
        await db.execute("INSERT INTO orders VALUES (999, 1, 'mine')")
    with pytest.raises(BackupError, match="not empty"):
        await strategy.finish_restore(tmp_path, postgres.dsn(database=empty))
    async with connected(postgres.dsn(database=empty)) as db:
        assert await db.fetchval("SELECT count(*) FROM orders") == 11
    # Even a lone function makes a database not empty.
    lone = new_name()
    async with connected(postgres.dsn()) as admin:
        await admin.execute(f'CREATE DATABASE "{lone}"')
    async with connected(postgres.dsn(database=lone)) as db:
        await db.execute("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    with pytest.raises(BackupError, match="not empty"):
        await strategy.finish_restore(tmp_path, postgres.dsn(database=lone))


async def test_a_failing_pg_dump_never_shows_the_password(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    strategy = strategy_for(postgres)
    missing = postgres.dsn(database="no_such_database")
    with pytest.raises(BackupError) as caught:
        await strategy.stage(missing, tmp_path)
    message = str(caught.value)
    assert "no_such_database" in message
    assert "does not exist" in message
    assert postgres.password not in message
    assert postgres.password not in repr(caught.value)

    wrong = "Wr0ng-Pa55word-" + secrets.token_hex(3)
    with pytest.raises(BackupError) as caught:
        await strategy.stage(postgres.dsn(password=wrong), tmp_path)
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value)
    assert postgres.password not in repr(strategy)


def write_spy(directory: Path, tool: Path, log: Path) -> Path:
    """A wrapper that records the argv and environment of each run, then runs ``tool``."""
    spy = directory / tool.name
    spy.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "argv: $*" "PGPASSWORD=${{PGPASSWORD:+set}}" >> {shlex.quote(str(log))}\n'
        f'exec {shlex.quote(str(tool))} "$@"\n'
    )
    spy.chmod(0o755)
    return spy


async def test_the_password_travels_in_the_environment_never_in_argv(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    spies = tmp_path / "bin"
    spies.mkdir()
    log = tmp_path / "runs.log"
    tools = {
        name: write_spy(spies, postgres.bindir / name, log)
        for name in ("pg_dump", "pg_restore", "psql")
    }
    strategy = PostgresBackupStrategy(
        pg_dump=tools["pg_dump"], pg_restore=tools["pg_restore"], psql=tools["psql"]
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    source = postgres.dsn(database=await create_shop(postgres, rows=5))
    await strategy.stage(source, staging)
    await strategy.finish_restore(staging, postgres.dsn(database=new_name()))
    runs = log.read_text()
    assert runs.count("argv:") == 5  # dump, list, create, inspect, restore
    assert runs.count("PGPASSWORD=set") == 5
    assert postgres.password not in runs


async def test_a_passfile_and_the_environment_are_enough(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:{postgres.user}:{postgres.password}\n")
    passfile.chmod(0o600)
    strategy = strategy_for(postgres, passfile=passfile, maintenance_database="template1")
    monkeypatch.setenv("PGPASSWORD", "an-inherited-wrong-one")  # the passfile wins
    source = await create_shop(postgres, rows=7)
    staging = tmp_path / "staging"
    staging.mkdir()
    await strategy.stage(
        f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{source}", staging
    )
    # A bare database name: host, port and user from the PG* environment.
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(postgres.port))
    monkeypatch.setenv("PGUSER", postgres.user)
    target = new_name()
    await strategy.finish_restore(staging, target)
    assert len(await orders_up_to(postgres.dsn(database=target), 10**9)) == 7


async def test_a_restore_destination_must_name_a_database(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    strategy = strategy_for(postgres)
    (tmp_path / "dump.pgdump").write_bytes(b"")
    with pytest.raises(BackupError, match="names no database"):
        await strategy.finish_restore(tmp_path, f"postgresql://127.0.0.1:{postgres.port}")
    with pytest.raises(BackupError, match="not a valid connection string"):
        await strategy.finish_restore(tmp_path, "host=127.0.0.1 password='s3cret")
    with pytest.raises(BackupError, match="sslpassword") as caught:
        await strategy.finish_restore(tmp_path, "dbname=x sslpassword=Key-Secret-1")
    assert "Key-Secret-1" not in str(caught.value)
    (tmp_path / "dump.pgdump").unlink()
    with pytest.raises(BackupError, match="holds 0"):
        await strategy.finish_restore(tmp_path, "anything")


def test_bad_arguments_name_their_field(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.write_text("*:*:*:*:pw\n")
    loose.chmod(0o644)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"compress": "yes"}, "compress"),
        ({"pg_dump": tmp_path / "pg_dump"}, "pg_dump"),
        ({"pg_restore": "no-such-pg_restore-tool"}, "pg_restore"),
        ({"psql": str(loose)}, "psql"),
        ({"passfile": tmp_path / "missing"}, "passfile"),
        ({"passfile": loose}, "passfile"),
        ({"passfile": tmp_path}, "passfile"),
        ({"maintenance_database": ""}, "maintenance_database"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigurationError) as caught:
            PostgresBackupStrategy(**kwargs)
        assert caught.value.field == field, kwargs
    # Found on PATH or in the versioned directories without being told where.
    assert os.access(PostgresBackupStrategy().pg_dump, os.X_OK)


async def test_an_awkward_password_works_in_both_connection_string_forms(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    role = new_name()
    password = "p@ss w:rd'\\/?#%é=" + secrets.token_hex(3)
    database = await create_shop(postgres, rows=3)
    async with connected(postgres.dsn()) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD $${password}$$")
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
    async with connected(postgres.dsn(database=database)) as db:
        await db.execute(f"ALTER TABLE orders OWNER TO {role}; ALTER TABLE ledger OWNER TO {role}")
    url = f"postgresql://{role}:{quote(password, safe='')}@127.0.0.1:{postgres.port}/{database}"
    keywords = (
        f"host=127.0.0.1 port={postgres.port} user={role} dbname={database} "
        "password='" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    )
    strategy = strategy_for(postgres)
    for index, source in enumerate((url, keywords)):
        staging = tmp_path / str(index)
        staging.mkdir()
        await strategy.stage(source, staging)
        target = new_name()
        await strategy.finish_restore(staging, url.rsplit("/", 1)[0] + "/" + target)
        assert len(await orders_up_to(postgres.dsn(database=target), 10**9)) == 3
    with pytest.raises(BackupError) as caught:
        await strategy.stage(url.rsplit("/", 1)[0] + "/no_such_db", tmp_path)
    assert "no_such_db" in str(caught.value)
    assert password not in str(caught.value)
    assert quote(password, safe="") not in str(caught.value)


async def test_a_damaged_dump_leaves_the_new_database_empty(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    strategy = strategy_for(postgres)
    await strategy.stage(postgres.dsn(database=await create_shop(postgres, rows=20_000)), tmp_path)
    dump = tmp_path / "dump.pgdump"
    await asyncio.to_thread(lambda: os.truncate(dump, dump.stat().st_size * 2 // 3))
    target = new_name()
    with pytest.raises(BackupError, match="pg_restore into database"):
        await strategy.finish_restore(tmp_path, postgres.dsn(database=target))
    async with connected(postgres.dsn(database=target)) as db:
        assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    # So the same restore of a good dump may simply be run again into it.


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


async def test_a_cancelled_stage_kills_pg_dump(postgres: PostgresServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    slow = tmp_path / "pg_dump"
    slow.write_text(f"#!/bin/sh\necho $$ > {shlex.quote(str(pidfile))}\nexec sleep 60\n")
    slow.chmod(0o755)
    strategy = strategy_for(postgres)
    strategy.pg_dump = slow
    staging = tmp_path / "staging"
    staging.mkdir()
    stage = asyncio.create_task(strategy.stage(postgres.dsn(), staging))
    await asyncio.to_thread(wait_for_file, pidfile)
    stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    pid = int(await asyncio.to_thread(pidfile.read_text))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
