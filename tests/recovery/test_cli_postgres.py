"""``sergas-guard backup`` with the PostgreSQL strategy, on a real server: the database
is backed up and restored into a new one, and its password is never printed."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result

from sergas_guard.cli import cli
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres


async def _sql(dsn: str, sql: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        if not sql.startswith("SELECT"):
            await connection.execute(sql)  # may hold several statements
            return []
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


def test_a_database_round_trip_through_the_command_line(
    postgres_session: PostgresServer, tmp_path: Path
) -> None:
    server = postgres_session
    name, copy = f"sg_{secrets.token_hex(4)}", f"sg_{secrets.token_hex(4)}"
    asyncio.run(_sql(server.dsn(), f'CREATE DATABASE "{name}"'))
    source = server.dsn(database=name)
    asyncio.run(
        _sql(
            source,
            "CREATE TABLE notes (id int PRIMARY KEY, body text);"
            "INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 300) i",
        )
    )
    env = {
        "SERGAS_GUARD_BACKUP_DIR": str(tmp_path / "repo"),
        "SERGAS_GUARD_BACKUP_PASSPHRASE": "pg-cli-passphrase",
        # The server's own client tools, whatever else is on PATH.
        "PATH": f"{server.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["backup", *args], env=env)

    created = run("create", "--name", "orders", "--source", source, "--strategy", "postgres")
    assert created.exit_code == 0, created.output
    listed = run("list", "--json")
    backup = json.loads(listed.stdout)["backups"][0]
    assert backup["strategy"] == "postgres"
    restored = run(
        "restore", "--backup-id", backup["backup_id"], "--destination", server.dsn(database=copy)
    )
    assert restored.exit_code == 0, restored.output
    assert asyncio.run(_sql(server.dsn(database=copy), "SELECT count(*) FROM notes")) == [(300,)]

    unreachable = server.dsn(database="no_such_database_here")
    failed = run("create", "--name", "x", "--source", unreachable, "--strategy", "postgres")
    assert failed.exit_code == 1
    for result in (created, listed, restored, failed):
        assert server.password not in result.stdout
        assert server.password not in result.stderr
