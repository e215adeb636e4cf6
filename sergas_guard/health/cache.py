"""Redis health: PING round trip and memory use against ``maxmemory``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError, HealthCheckError
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck
from sergas_guard.health.result import Observation
from sergas_guard.health.thresholds import (
    check_settings,
    degrade,
    latency_observation,
    ratio_in_range,
)
from sergas_guard.secrets import scrub, scrub_url, url_secrets
from sergas_guard.storage.redis import RedisStorage, check_redis_url

__all__ = ["CacheHealthCheck"]

_SCHEMES = {"redis", "rediss", "unix"}
_CLUSTER_SCHEMES = {"redis+cluster", "rediss+cluster"}


class CacheHealthCheck(HealthCheck):
    """Checks a Redis server at ``redis_url`` (``redis://``, ``rediss://``, ``unix://``),
    or a Redis Cluster (``redis+cluster://h1:p1,h2:p2``, as the storages spell it).

    Reports the time to connect and get the ``PING`` reply (from every node of a
    cluster, after slot discovery), in ms: DEGRADED above ``degraded_latency`` seconds.
    When the server has a ``maxmemory`` limit, ``INFO memory`` use at or above
    ``memory_threshold`` of it is DEGRADED too (evictions or OOM errors are near); in a
    cluster the fullest primary counts.
    Each probe opens its own connection without retries, so a dead server is reported
    at once instead of after the client's back-off. Raises HealthCheckError for an
    unsupported URL or a bad threshold.
    """

    component_type = "datastore"
    measurement = "responseTime"

    def __init__(
        self,
        name: str,
        redis_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        degraded_latency: float | None = 0.1,
        memory_threshold: float = 0.9,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(name, timeout=timeout, critical=critical, tags=tags, clock=clock)
        check_settings(("redis_url", redis_url), degraded_latency)
        scheme = redis_url.split("://", 1)[0].lower() if "://" in redis_url else ""
        if scheme not in _SCHEMES | _CLUSTER_SCHEMES:
            raise HealthCheckError(
                f"{name!r}: unsupported Redis URL {scrub_url(redis_url)!r} "
                "(expected redis://, rediss://, unix:// or redis+cluster://)"
            )
        self.is_cluster = scheme in _CLUSTER_SCHEMES
        try:
            check_redis_url(redis_url, cluster=self.is_cluster)
        except ConfigurationError as exc:  # the URL's secrets are scrubbed from it
            raise HealthCheckError(f"{name!r}: {exc}") from None
        if not ratio_in_range(memory_threshold):
            raise HealthCheckError(
                f"{name!r}: memory_threshold must be in (0, 1]", field="memory_threshold"
            )
        self._redis_url = redis_url
        self._secrets = url_secrets(redis_url)
        self.degraded_latency = degraded_latency
        self.memory_threshold = memory_threshold

    @property
    def redis_url(self) -> str:
        """The URL with its password and secret parameters replaced by ``***``."""
        return scrub(self._redis_url, *self.secrets())

    async def probe(self) -> Observation:
        if self.is_cluster:
            return await self._probe_cluster()
        client = aioredis.Redis.from_url(
            self._redis_url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            # Timed from before the connection is opened: a server that stalls during the
            # handshake is as slow for a new client as one that stalls on PING.
            started = self.clock.monotonic()
            await client.ping()
            elapsed = self.clock.monotonic() - started
            memory: dict[str, Any] = await client.info("memory")
        finally:
            await client.aclose()
        return self._judge(elapsed, _memory(memory), {})

    async def _probe_cluster(self) -> Observation:
        storage = RedisStorage(
            self._redis_url, connect_timeout=self.timeout, socket_timeout=self.timeout
        )
        try:
            # Slot discovery first: its extra round trips say nothing about the nodes.
            await storage.client.initialize()
            started = self.clock.monotonic()
            await storage.client.ping(target_nodes=AsyncRedisCluster.ALL_NODES)
            elapsed = self.clock.monotonic() - started
            infos = await storage.client.info("memory", target_nodes=AsyncRedisCluster.PRIMARIES)
        finally:
            await storage.aclose()
        # One primary answers with its own mapping, several with {node: mapping}.
        per_node = [infos] if "used_memory" in infos else list(infos.values())
        fullest = max((_memory(info) for info in per_node), key=_usage)
        return self._judge(elapsed, fullest, {"primaries": len(per_node)})

    def _judge(self, elapsed: float, memory: tuple[int, int], extra: dict[str, Any]) -> Observation:
        used, limit = memory
        details: dict[str, Any] = {**extra, "used_memory_bytes": used, "maxmemory_bytes": limit}
        usage = _usage(memory)
        if limit > 0:
            details["memory_usage_percent"] = round(usage * 100, 1)
        observation = latency_observation(elapsed, self.degraded_latency, details)
        if limit > 0 and usage >= self.memory_threshold:
            return degrade(
                observation,
                f"memory {usage:.0%} of maxmemory (threshold {self.memory_threshold:.0%})",
            )
        return observation


def _memory(info: dict[str, Any]) -> tuple[int, int]:
    """``(used_memory, maxmemory)`` from an ``INFO memory`` reply (0 = no limit)."""
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))


def _usage(memory: tuple[int, int]) -> float:
    used, limit = memory
    return used / limit if limit > 0 else 0.0
