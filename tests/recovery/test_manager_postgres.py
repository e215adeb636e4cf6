"""A PostgreSQL database through the manager: backed up, restored into a new database,
its password never in a manifest, a listing or a log line."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import asyncpg
import pytest

from sergas_guard.recovery import BackupManager, BackupType, PostgresBackupStrategy
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres


async def _query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def test_a_database_backup_restores_into_a_new_database(
    postgres_session: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = postgres_session
    name, copy = f"sg_{secrets.token_hex(4)}", f"sg_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    source = server.dsn(database=name)
    connection = await asyncpg.connect(source)
    try:
        await connection.execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);"
            "INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 500) i"
        )
    finally:
        await connection.close()

    caplog.set_level(logging.DEBUG)
    manager = BackupManager(tmp_path / "repo")
    manager.register_strategy(
        "postgres",
        PostgresBackupStrategy(
            pg_dump=server.bindir / "pg_dump", pg_restore=server.bindir / "pg_restore"
        ),
    )
    full = await manager.create_backup("db", source, strategy="postgres")
    again = await manager.create_backup(
        "db", source, backup_type=BackupType.DIFFERENTIAL, strategy="postgres"
    )
    assert again.parent_id == full.backup_id  # the scrubbed DSN still names one chain
    assert await manager.restore_backup(again.backup_id, server.dsn(database=copy))
    assert await _query(server.dsn(database=copy), "SELECT count(*), max(body) FROM notes") == [
        (500, "note 99")
    ]

    password = server.password
    assert password
    listed = manager.list_backups()
    assert all(password not in repr(b) for b in listed)
    document = manager._open(create=False).read_manifest(full.backup_id)
    assert password not in json.dumps(document)
    assert password not in caplog.text
