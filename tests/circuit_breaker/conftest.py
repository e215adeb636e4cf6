"""Fixtures of the circuit-breaker tests: one breaker factory per backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sergas_guard.circuit_breaker import CircuitBreaker
from sergas_guard.clock import ManualClock
from tests.circuit_breaker.support import config

BreakerFactory = Callable[..., CircuitBreaker]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """None (state in this process) or a RedisStorage on a real redis-server."""
    if request.param == "memory":
        yield None
        return
    import redis
    import redis.asyncio as aioredis

    from sergas_guard.ratelimit.stores.redis import RedisStorage

    url = request.getfixturevalue("redis_url")
    # redis-py's default pool refuses a 101st concurrent command ("Too many
    # connections"), which the breaker would take for an outage; a crowd of callers
    # needs a blocking pool, which waits for a free connection instead.
    storage = RedisStorage(
        client=aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=10)
        ),
        sync_client=redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=10)
        ),
    )
    yield storage
    await storage.aclose()  # in the test's own loop, where its connections live


@pytest.fixture
def make_breaker(backend: Any) -> BreakerFactory:
    """Build a breaker with the small test config on the parametrised backend."""

    def make(**overrides: Any) -> CircuitBreaker:
        return CircuitBreaker(
            f"dep-{uuid.uuid4().hex[:8]}",
            config(**overrides),
            storage=backend,
            clock=ManualClock(),
        )

    return make
