"""DatabaseHealthCheck against a real PostgreSQL and real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sergas_guard.errors import HealthCheckError
from sergas_guard.health import DatabaseHealthCheck, HealthCheckRegistry, HealthStatus
from sergas_guard.health.formats import health_json
from sergas_guard.health.result import Observation
from tests.servers import PostgresServer

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def frozen_postmaster(server: PostgresServer) -> Iterator[None]:
    """SIGSTOP the postmaster: the kernel still accepts connections, nobody answers."""
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_healthy_postgres_reports_round_trip_and_connection_usage(
    postgres: PostgresServer,
) -> None:
    check = DatabaseHealthCheck(
        name="database_primary", connection_string=postgres.dsn(), max_connections=20
    )
    result = await check.check()
    assert result.status is HealthStatus.HEALTHY, result.message
    assert result.observed_unit == "ms"
    assert result.observed_value is not None
    assert result.observed_value >= 0
    assert result.details["max_connections"] == 20
    assert result.details["connections"] >= 1  # at least the check's own session
    assert result.component_type == "datastore"
    # Without a budget of its own the check uses the server's limit.
    server_wide = await DatabaseHealthCheck("db", postgres.dsn()).check()
    assert server_wide.details["max_connections"] == 100 - 3  # max - superuser reserved


async def test_connection_usage_above_the_threshold_degrades(postgres: PostgresServer) -> None:
    others = [await asyncpg.connect(postgres.dsn()) for _ in range(3)]
    try:
        check = DatabaseHealthCheck("db", postgres.dsn(), max_connections=5)
        result = await check.check()
    finally:
        for connection in others:
            await connection.close()
    assert result.status is HealthStatus.DEGRADED
    assert result.details["connections"] >= 4
    assert "of 5 connections in use" in result.message


async def test_wrong_password_is_unhealthy_and_never_shown(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-Pa55word"
    check = DatabaseHealthCheck("db", postgres.dsn(password=wrong))
    with caplog.at_level(logging.DEBUG):
        result = await check.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "password authentication failed" in result.message
    rendered = [
        result.message,
        repr(result),
        repr(check),
        check.connection_string,
        caplog.text,
        str(health_json([result], details=True)),
    ]
    assert all(wrong not in text for text in rendered)
    assert ":***@" in check.connection_string


async def test_a_password_echoed_in_a_driver_error_is_scrubbed(postgres: PostgresServer) -> None:
    # Fake fault: no real driver we use echoes the bare password, so a subclass raises
    # what a careless one would; the check must still scrub it, in both spellings.
    class EchoingCheck(DatabaseHealthCheck):
        async def probe(self) -> Observation:
            raise RuntimeError("login as guard with p@ss:w0rd / p%40ss%3Aw0rd refused")

    check = EchoingCheck("db", "postgresql://guard:p%40ss%3Aw0rd@127.0.0.1:1/db")
    result = await check.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "w0rd" not in result.message
    assert "login as guard with *** / *** refused" in result.message
    assert "w0rd" not in repr(check)
    assert "w0rd" not in check.connection_string


async def test_the_check_never_writes(postgres: PostgresServer) -> None:
    check = DatabaseHealthCheck("db", postgres.dsn(), query="CREATE TABLE sg_probe (x int)")
    result = await check.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "read-only" in result.message
    connection = await asyncpg.connect(postgres.dsn())
    try:
        assert await connection.fetchval("SELECT to_regclass('sg_probe')") is None
    finally:
        await connection.close()


async def test_server_stopped_mid_run_then_back(postgres: PostgresServer) -> None:
    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0)
    registry.register(DatabaseHealthCheck("db", postgres.dsn(), timeout=2))
    assert (await registry.check("db")).is_healthy
    postgres.stop()
    down = await registry.check("db")
    assert down.status is HealthStatus.UNHEALTHY
    assert down.duration < 2  # refused at once, not a timeout
    postgres.start()
    assert (await registry.check("db")).is_healthy


async def test_a_server_that_never_answers_is_bounded_by_the_timeout(
    postgres: PostgresServer,
) -> None:
    check = DatabaseHealthCheck("db", postgres.dsn(), timeout=0.3)
    with frozen_postmaster(postgres):
        result = await check.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "timed out" in result.message
    assert result.duration < 1.0


def test_unsupported_urls_are_refused_without_their_password() -> None:
    with pytest.raises(HealthCheckError, match="unsupported") as info:
        DatabaseHealthCheck("db", "mysql://root:topsecret@localhost/db")
    assert "topsecret" not in str(info.value)
    with pytest.raises(HealthCheckError, match="max_connections"):
        DatabaseHealthCheck("db", "sqlite:///x.db", max_connections=0)


def _database_file(path: Path) -> Path:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE t (x int)")
    connection.close()
    return path


async def test_sqlite_file_is_read_without_being_changed(tmp_path: Path) -> None:
    db = _database_file(tmp_path / "app.db")
    before = db.read_bytes()
    result = await DatabaseHealthCheck("sqlite", f"sqlite:///{db}").check()
    assert result.status is HealthStatus.HEALTHY, result.message
    assert result.observed_unit == "ms"
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["app.db"]  # no journal left behind


async def test_sqlite_missing_or_corrupt_file_is_unhealthy(tmp_path: Path) -> None:
    missing = await DatabaseHealthCheck("sqlite", f"sqlite:///{tmp_path / 'nope.db'}").check()
    assert missing.status is HealthStatus.UNHEALTHY
    assert "unable to open" in missing.message
    assert not (tmp_path / "nope.db").exists()  # read-only mode does not create it
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database, just text long enough to have a header" * 10)
    corrupt = await DatabaseHealthCheck("sqlite", f"sqlite:///{junk}").check()
    assert corrupt.status is HealthStatus.UNHEALTHY
    assert "not a database" in corrupt.message


async def test_sqlite_memory_database() -> None:
    assert (await DatabaseHealthCheck("mem", "sqlite:///:memory:").check()).is_healthy


async def test_server_stopped_while_a_query_runs_fails_at_once(postgres: PostgresServer) -> None:
    check = DatabaseHealthCheck("db", postgres.dsn(), query="SELECT pg_sleep(5)", timeout=8)
    running = asyncio.create_task(check.check())
    watcher = await asyncpg.connect(postgres.dsn())
    try:
        for _ in range(500):  # until the probe's query is on the server
            active = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)'"
            )
            if active:
                break
            await asyncio.sleep(0.01)
    finally:
        await watcher.close()
    await asyncio.to_thread(postgres.stop)
    result = await running
    assert result.status is HealthStatus.UNHEALTHY
    assert "timed out" not in result.message
    assert result.duration < 5
