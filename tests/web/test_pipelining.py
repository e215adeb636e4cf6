"""Pipelined Redis decisions: same answers, one connection, errors reach each caller."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis

from sergas_guard.errors import ConfigurationError, StorageError
from sergas_guard.ratelimit import RateLimiter
from sergas_guard.web.pipelining import pipelined_redis_storage
from tests.servers import RedisServer

pytestmark = pytest.mark.redis


def connected_clients(url: str) -> int:
    with contextlib.closing(redis.Redis.from_url(url)) as admin:
        return int(admin.info("clients")["connected_clients"]) - 1  # not counting admin


async def test_concurrent_decisions_share_one_connection_and_stay_exact(redis_url: str) -> None:
    storage = pipelined_redis_storage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    limiter = RateLimiter("30/minute", storage, strategy="sliding_log", name="pipe")
    try:
        decisions = await asyncio.gather(*(limiter.decide(f"k{n % 3}") for n in range(150)))
        assert connected_clients(redis_url) == 1
    finally:
        await storage.aclose()
    admitted = [d.key for d in decisions if d.allowed]
    assert sorted(admitted) == sorted([f"k{n}" for n in range(3)] * 30)
    assert connected_clients(redis_url) == 0


async def test_script_cache_flush_is_recovered(redis_url: str) -> None:
    storage = pipelined_redis_storage(redis_url)
    limiter = RateLimiter("5/minute", storage, name="flush")
    try:
        assert (await limiter.decide("a")).allowed
        with contextlib.closing(redis.Redis.from_url(redis_url)) as admin:
            admin.script_flush()
        results = await asyncio.gather(*(limiter.decide("a") for _ in range(6)))
    finally:
        await storage.aclose()
    assert [r.allowed for r in results].count(True) == 4


async def test_a_cancelled_request_does_not_disturb_the_others(redis_url: str) -> None:
    storage = pipelined_redis_storage(redis_url)
    limiter = RateLimiter("100/minute", storage, name="cancel")
    try:
        tasks = [asyncio.ensure_future(limiter.decide("c")) for _ in range(10)]
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await storage.aclose()
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r.allowed for i, r in enumerate(results) if i != 3)  # type: ignore[union-attr]


async def test_an_outage_fails_every_waiting_caller_with_a_storage_error(
    own_redis: RedisServer,
) -> None:
    storage = pipelined_redis_storage(own_redis.url)
    limiter = RateLimiter("5/minute", storage, name="down", on_storage_error=None)
    try:
        assert (await limiter.decide("x")).allowed
        own_redis.stop()
        results = await asyncio.gather(
            *(limiter.decide("x") for _ in range(5)), return_exceptions=True
        )
    finally:
        await storage.aclose()
    assert all(isinstance(r, StorageError) for r in results)


def test_cluster_urls_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        pipelined_redis_storage("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
