"""Redis health: PING round trip and memory use against ``maxmemory``.

Probes go through :mod:`sergas_guard.redis` (a server, Sentinel's master, a cluster's
primaries) on connections of their own, opened and closed by each probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

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
from sergas_guard.redis.client import RedisClient, client_target
from sergas_guard.redis.cluster import AsyncClusterClient
from sergas_guard.redis.url import ClusterTarget, Target, parse_url
from sergas_guard.secrets import scrub, scrub_url, url_secrets

__all__ = ["CacheHealthCheck"]

_SCHEMES = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}
_CLUSTER_SCHEMES = {"redis+cluster", "rediss+cluster"}


class CacheHealthCheck(HealthCheck):
    """Checks a Redis server at ``redis_url`` (``redis://``, ``rediss://``, ``unix://``),
    the master of a Sentinel service (``redis+sentinel://s1:p1,s2:p2/service``) or a
    Redis Cluster (``redis+cluster://h1:p1,h2:p2``), as the storages spell them.

    Reports the time to connect and get the ``PING`` reply (a Sentinel lookup included;
    from every primary of a cluster, after slot discovery), in ms: DEGRADED above
    ``degraded_latency`` seconds. When the server has a ``maxmemory`` limit, ``INFO
    memory`` use at or above ``memory_threshold`` of it is DEGRADED too (evictions or OOM
    errors are near); in a cluster the fullest primary counts.
    Each probe opens its own connection and never retries, so a dead server is reported
    at once. Raises HealthCheckError for an unsupported URL (only our URL options are
    accepted, see :func:`sergas_guard.redis.parse_url`) or a bad threshold.
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
                f"{name!r}: unsupported Redis URL {scrub_url(redis_url)!r} (expected "
                "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://)"
            )
        self.is_cluster = scheme in _CLUSTER_SCHEMES
        try:
            # One connection: a probe sends two commands, one after the other.
            self._target: Target = parse_url(
                redis_url, connect_timeout=self.timeout, socket_timeout=self.timeout, connections=1
            )
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
        target = self._target
        if isinstance(target, ClusterTarget):
            return await self._probe_cluster(target)
        single, resolver = client_target(target)
        client = RedisClient(single, resolver=resolver, secrets=self._secrets)
        try:
            # Timed from before the connection is opened: a server that stalls during the
            # handshake is as slow for a new client as one that stalls on PING.
            started = self.clock.monotonic()
            await client.call("PING", within=self.timeout)
            elapsed = self.clock.monotonic() - started
            memory = _memory(await client.call("INFO", "memory", within=self.timeout))
        finally:
            await client.aclose()
        return self._judge(elapsed, memory, {})

    async def _probe_cluster(self, target: ClusterTarget) -> Observation:
        cluster = AsyncClusterClient(target, self._secrets)
        try:
            # Slot discovery first: its round trip says nothing about the nodes.
            await cluster.refresh()
            primaries = list(dict.fromkeys(a for a in cluster.slots if a is not None))
            nodes = [cluster.node(address) for address in primaries]
            started = self.clock.monotonic()
            await asyncio.gather(*(node.call("PING", within=self.timeout) for node in nodes))
            elapsed = self.clock.monotonic() - started
            infos = await asyncio.gather(
                *(node.call("INFO", "memory", within=self.timeout) for node in nodes)
            )
        finally:
            await cluster.aclose()
        fullest = max((_memory(info) for info in infos), key=_usage)
        return self._judge(elapsed, fullest, {"primaries": len(primaries)})

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


def _memory(reply: Any) -> tuple[int, int]:
    """``(used_memory, maxmemory)`` from an ``INFO memory`` reply (0 = no limit)."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(fields.get("used_memory", 0)), int(fields.get("maxmemory", 0))


def _usage(memory: tuple[int, int]) -> float:
    used, limit = memory
    return used / limit if limit > 0 else 0.0
