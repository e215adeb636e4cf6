"""CacheHealthCheck against real redis-servers: healthy, locked, stopped, frozen, full."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
import redis

from sergas_guard.errors import HealthCheckError
from sergas_guard.health import CacheHealthCheck, HealthCheckRegistry, HealthStatus
from tests.servers import RedisCluster, RedisServer, redis_server

pytestmark = pytest.mark.redis


async def test_healthy_redis_reports_ping_and_memory(redis_url: str) -> None:
    # Not a latency test: a busy CI machine may take over 100 ms to connect and PING.
    check = CacheHealthCheck(
        name="redis_cache", redis_url=redis_url, timeout=5, degraded_latency=2.0
    )
    result = await check.check()
    assert result.status is HealthStatus.HEALTHY, result.message
    assert result.observed_unit == "ms"
    assert result.details["used_memory_bytes"] > 0
    assert result.details["maxmemory_bytes"] == 0  # no limit, so no usage figure
    assert "memory_usage_percent" not in result.details


async def test_wrong_password_is_unhealthy_and_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with redis_server("--requirepass", "right-redis-pw") as server:
        good = f"redis://:right-redis-pw@127.0.0.1:{server.port}/0"
        bad = f"redis://:Wr0ng-redis-pw@127.0.0.1:{server.port}/0"
        assert (await CacheHealthCheck("cache", good, degraded_latency=2.0).check()).is_healthy
        check = CacheHealthCheck("cache", bad)
        with caplog.at_level(logging.DEBUG):
            result = await check.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "invalid" in result.message.lower() or "auth" in result.message.lower()
    for text in (result.message, repr(result), check.redis_url, caplog.text):
        assert "Wr0ng-redis-pw" not in text
    assert check.redis_url == f"redis://:***@127.0.0.1:{server.port}/0"


async def test_server_stopped_mid_run_then_back(own_redis: RedisServer) -> None:
    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0)
    registry.register(CacheHealthCheck("cache", own_redis.url, timeout=2))
    assert (await registry.check("cache")).is_healthy
    own_redis.stop()
    down = await registry.check("cache")
    assert down.status is HealthStatus.UNHEALTHY
    assert "ConnectionError" in down.message or "refused" in down.message.lower()
    own_redis.start()
    assert (await registry.check("cache")).is_healthy


async def test_a_frozen_server_is_bounded_by_the_timeout(own_redis: RedisServer) -> None:
    check = CacheHealthCheck("cache", own_redis.url, timeout=0.3)
    own_redis.pause()
    try:
        result = await check.check()
    finally:
        own_redis.resume()
    assert result.status is HealthStatus.UNHEALTHY
    assert "timed out" in result.message.lower() or "timeout" in result.message.lower()
    assert result.duration < 1.0


async def test_a_slow_reply_degrades(own_redis: RedisServer) -> None:
    # A real stall: the server is frozen and thawed 0.3 s later, so the PING reply is late
    # but arrives within the timeout.
    check = CacheHealthCheck("cache", own_redis.url, timeout=3, degraded_latency=0.1)
    own_redis.pause()
    thaw = threading.Timer(0.3, own_redis.resume)
    thaw.start()
    try:
        result = await check.check()
    finally:
        thaw.join()
    assert result.status is HealthStatus.DEGRADED
    assert result.message.startswith("slow reply")
    assert result.observed_value is not None
    assert result.observed_value >= 250


async def test_memory_near_maxmemory_degrades(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(int(used * 1.05)))
        result = await CacheHealthCheck("cache", own_redis.url).check()
        client.config_set("maxmemory", "0")
    finally:
        client.close()
    assert result.status is HealthStatus.DEGRADED
    assert "of maxmemory" in result.message
    assert result.details["memory_usage_percent"] >= 90


def test_bad_urls_and_thresholds_are_refused() -> None:
    with pytest.raises(HealthCheckError, match="unsupported") as info:
        CacheHealthCheck("cache", "memcached://user:s3cr3t@localhost")
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(HealthCheckError, match="memory_threshold"):
        CacheHealthCheck("cache", "redis://localhost", memory_threshold=1.5)


async def test_server_killed_while_a_check_waits_fails_at_once(own_redis: RedisServer) -> None:
    # Frozen first so the check is surely mid-run, then killed: the closed connection
    # must end the check, not its 5 s timeout.
    check = CacheHealthCheck("cache", own_redis.url, timeout=5)
    own_redis.pause()
    running = asyncio.create_task(check.check())
    await asyncio.sleep(0.2)
    assert not running.done()
    assert own_redis.process is not None
    own_redis.process.kill()
    own_redis.process.wait()
    own_redis.process = None
    result = await running
    assert result.status is HealthStatus.UNHEALTHY
    assert "timed out" not in result.message
    assert result.duration < 4


@pytest.mark.cluster
async def test_redis_cluster_every_node_answers(redis_cluster_health: RedisCluster) -> None:
    # No latency threshold: this test is about every node answering, on a busy machine.
    check = CacheHealthCheck("cache", redis_cluster_health.url, timeout=5, degraded_latency=None)
    result = await check.check()
    assert result.status is HealthStatus.HEALTHY, result.message
    assert result.details["primaries"] == 3
    assert result.observed_unit == "ms"


@pytest.mark.cluster
async def test_redis_cluster_fullest_primary_degrades(redis_cluster_health: RedisCluster) -> None:
    node = redis_cluster_health.nodes[1]
    client = redis.Redis(host="127.0.0.1", port=node.port)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(int(used * 1.05)))
        result = await CacheHealthCheck("cache", redis_cluster_health.url, timeout=5).check()
    finally:
        client.config_set("maxmemory", "0")
        client.close()
    assert result.status is HealthStatus.DEGRADED
    assert result.details["maxmemory_bytes"] > 0
    assert "of maxmemory" in result.message
