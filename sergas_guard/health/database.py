"""Database health: a read-only round trip, plus connection usage on PostgreSQL.

PostgreSQL goes through asyncpg (the ``postgres`` extra, imported only when such a
check is built); SQLite through the standard library, in a thread of its own. The
check never writes: on PostgreSQL it works inside a ``READ ONLY`` transaction, and
SQLite files are opened with ``mode=ro``.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health._threads import SyncRunner
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck, check_credentials
from sergas_guard.health.result import Observation
from sergas_guard.health.thresholds import (
    check_settings,
    degrade,
    latency_observation,
    ratio_in_range,
)
from sergas_guard.secrets import scrub, scrub_url, url_secrets
from sergas_guard.validation import whole

__all__ = ["DatabaseHealthCheck"]

_POSTGRES_SCHEMES = {"postgres", "postgresql"}
# Connections of this role to this database when the caller gave its own budget (its
# pool size); all client connections against the server's limit otherwise.
_USAGE_OF_ROLE = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND usename = current_user"
)
_USAGE_OF_SERVER = (
    "SELECT count(*), current_setting('max_connections')::int "
    "- current_setting('superuser_reserved_connections')::int "
    "FROM pg_stat_activity WHERE backend_type = 'client backend'"
)


def _sqlite_path(connection_string: str) -> str:
    # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory:
    prefix = "sqlite:///"
    if not connection_string.startswith(prefix) or connection_string == prefix:
        raise HealthCheckError("a SQLite connection string looks like sqlite:///path/to/file.db")
    return unquote(connection_string[len(prefix) :])


def _sqlite_round_trip(path: str, timeout: float, clock: Clock) -> float:
    """Open the file read-only, read its schema; the query's duration in seconds."""
    target = ":memory:" if path == ":memory:" else f"file:{quote(path)}?mode=ro"
    started = clock.monotonic()
    connection = sqlite3.connect(target, uri=target != ":memory:", timeout=timeout)
    try:
        # Reading sqlite_master proves the file is a database; SELECT 1 would not open it.
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return clock.monotonic() - started
    finally:
        connection.close()


class DatabaseHealthCheck(HealthCheck):
    """Checks a PostgreSQL or SQLite database.

    ``connection_string`` is ``postgresql://user:password@host:port/db`` or
    ``sqlite:///path/to/file.db``. The check connects, runs ``query`` (``SELECT 1``)
    read-only and reports the time both took in ms: DEGRADED above
    ``degraded_latency`` seconds. On
    PostgreSQL it also counts connections in ``pg_stat_activity``: those of this role
    to this database against ``max_connections`` when given (the application's pool
    budget), else all client connections against the server's own limit; DEGRADED
    when the usage reaches ``connection_usage_threshold``. The password never appears
    in results, logs or ``repr``.

    Raises HealthCheckError for an unsupported scheme, a bad threshold, or a
    PostgreSQL string when asyncpg is not installed.
    """

    component_type = "datastore"
    measurement = "responseTime"

    def __init__(
        self,
        name: str,
        connection_string: str,
        max_connections: int | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        query: str = "SELECT 1",
        degraded_latency: float | None = 0.5,
        connection_usage_threshold: float = 0.8,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(name, timeout=timeout, critical=critical, tags=tags, clock=clock)
        check_settings(("connection_string", connection_string), degraded_latency)
        scheme = connection_string.split("://", 1)[0].lower() if "://" in connection_string else ""
        if scheme not in _POSTGRES_SCHEMES and scheme != "sqlite":
            raise HealthCheckError(
                f"{name!r}: unsupported database URL {scrub_url(connection_string)!r} "
                "(expected postgresql://... or sqlite:///...)"
            )
        if max_connections is not None:
            whole(max_connections, "max_connections", minimum=1, error=HealthCheckError)
        if not ratio_in_range(connection_usage_threshold):
            raise HealthCheckError(
                f"{name!r}: connection_usage_threshold must be in (0, 1]",
                field="connection_usage_threshold",
            )
        self.is_postgres = scheme in _POSTGRES_SCHEMES
        self._connection_string = connection_string
        self._secrets = url_secrets(connection_string)
        if self.is_postgres:
            _check_postgres_url(name, connection_string)
        self.max_connections = max_connections
        self.query = query
        self.degraded_latency = degraded_latency
        self.connection_usage_threshold = connection_usage_threshold
        if self.is_postgres:
            self._asyncpg = _import_asyncpg(name)
        else:
            self._sqlite_path = _sqlite_path(connection_string)
            self._runner = SyncRunner(name)

    @property
    def connection_string(self) -> str:
        """The connection string with its password and secret parameters replaced by ``***``."""
        return scrub(self._connection_string, *self.secrets())

    async def probe(self) -> Observation:
        if not self.is_postgres:
            elapsed = await self._runner.run(
                _sqlite_round_trip, self._sqlite_path, self.timeout, self.clock
            )
            return latency_observation(elapsed, self.degraded_latency, {})
        return await self._probe_postgres()

    async def _probe_postgres(self) -> Observation:
        started = self.clock.monotonic()  # connecting is part of what a client waits for
        connection = await self._asyncpg.connect(
            self._connection_string,
            timeout=self.timeout,
            server_settings={"application_name": "sergas-guard-health"},
        )
        try:
            # BEGIN READ ONLY rather than a default_transaction_read_only startup
            # parameter, which PgBouncer refuses.
            async with connection.transaction(readonly=True):
                await connection.fetchval(self.query)
                elapsed = self.clock.monotonic() - started
                if self.max_connections is not None:
                    used = await connection.fetchval(_USAGE_OF_ROLE)
                    limit = self.max_connections
                else:
                    used, limit = await connection.fetchrow(_USAGE_OF_SERVER)
            await connection.close(timeout=self.timeout)
        except BaseException:
            # close() waits for the server's goodbye, which a hung server never sends.
            connection.terminate()
            raise
        return self._judge(elapsed, int(used), int(limit))

    def _judge(self, elapsed: float, used: int, limit: int) -> Observation:
        usage = used / limit if limit > 0 else 1.0
        details: dict[str, Any] = {
            "connections": used,
            "max_connections": limit,
            "connection_usage_percent": round(usage * 100, 1),
        }
        observation = latency_observation(elapsed, self.degraded_latency, details)
        if usage >= self.connection_usage_threshold:
            return degrade(
                observation,
                f"{used} of {limit} connections in use "
                f"(threshold {self.connection_usage_threshold:.0%})",
            )
        return observation


def _check_postgres_url(name: str, url: str) -> None:
    # asyncpg splits the userinfo at its first '@' and parses the query strictly: refuse
    # here, with the URL scrubbed, what it would misread and perhaps echo in part.
    check_credentials(name, url, "@/?#")
    query = urlsplit(url).query
    try:
        parse_qs(query, strict_parsing=True)
    except ValueError:
        raise HealthCheckError(
            f"{name!r}: the query of {scrub_url(url)!r} is not name=value pairs joined by '&' "
            "(percent-encode '&', '=' and '#' in values)"
        ) from None


def _import_asyncpg(name: str) -> Any:
    try:
        return importlib.import_module("asyncpg")
    except ModuleNotFoundError:
        raise HealthCheckError(
            f"{name!r}: PostgreSQL checks need asyncpg (pip install 'sergas-guard[postgres]')"
        ) from None
