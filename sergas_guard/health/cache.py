"""Redis health: PING round trip and memory use against ``maxmemory``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck, url_secrets
from sergas_guard.health.result import Observation
from sergas_guard.health.thresholds import degrade, latency_observation, ratio_in_range
from sergas_guard.secrets import scrub

__all__ = ["CacheHealthCheck"]

_SCHEMES = {"redis", "rediss", "unix"}


class CacheHealthCheck(HealthCheck):
    """Checks a Redis server at ``redis_url`` (``redis://``, ``rediss://``, ``unix://``).

    Reports the time to connect and get the ``PING`` reply, in ms: DEGRADED above
    ``degraded_latency`` seconds.
    When the server has a ``maxmemory`` limit, ``INFO memory`` use at or above
    ``memory_threshold`` of it is DEGRADED too (evictions or OOM errors are near).
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
        scheme = redis_url.split("://", 1)[0].lower() if "://" in redis_url else ""
        if scheme not in _SCHEMES:
            raise HealthCheckError(
                f"{name!r}: unsupported Redis URL {scrub(redis_url)!r} "
                "(expected redis://, rediss:// or unix://)"
            )
        if not ratio_in_range(memory_threshold):
            raise HealthCheckError(f"{name!r}: memory_threshold must be in (0, 1]")
        self._redis_url = redis_url
        self._secrets = url_secrets(redis_url)
        self.degraded_latency = degraded_latency
        self.memory_threshold = memory_threshold

    @property
    def redis_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return scrub(self._redis_url, *self.secrets())

    async def probe(self) -> Observation:
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
        return self._judge(
            elapsed, int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        )

    def _judge(self, elapsed: float, used: int, limit: int) -> Observation:
        details: dict[str, Any] = {"used_memory_bytes": used, "maxmemory_bytes": limit}
        usage = used / limit if limit > 0 else 0.0
        if limit > 0:
            details["memory_usage_percent"] = round(usage * 100, 1)
        observation = latency_observation(elapsed, self.degraded_latency, details)
        if limit > 0 and usage >= self.memory_threshold:
            return degrade(
                observation,
                f"memory {usage:.0%} of maxmemory (threshold {self.memory_threshold:.0%})",
            )
        return observation
