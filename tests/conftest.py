"""Shared fixtures: real servers, started once per session and flushed between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import (
    PostgresServer,
    RedisCluster,
    RedisServer,
    postgres_server,
    redis_cluster,
    redis_server,
)


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    """URL of a real, empty redis-server (shared by the session, flushed per test)."""
    import redis

    if redis_session.process is None or redis_session.process.poll() is not None:
        redis_session.start()
    client = redis.Redis.from_url(redis_session.url)
    client.flushall()
    client.close()
    return redis_session.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone, which the test may stop, pause and restart."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server
