"""Redis storage: shared state for a fleet of workers.

Connection handling lives here (URL parsing, pools, timeouts, cluster); the rate-limit
decisions run as Lua scripts (``lua/``), one round trip each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from sergas_guard.errors import ConfigurationError

__all__ = ["RedisStorage"]

DEFAULT_CONNECT_TIMEOUT = 0.05
DEFAULT_SOCKET_TIMEOUT = 0.05


def _cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str]:
    """Split ``redis+cluster://[user:pw@]h1:p1,h2:p2/...`` into nodes and a template URL."""
    parts = urlsplit(url)
    netloc = parts.netloc
    auth, _, hosts = netloc.rpartition("@")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"cluster node {host_port!r} must be host:port", field="storage"
            )
        nodes.append((host, int(port)))
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    first = f"{auth}@{hosts.split(',')[0]}" if auth else hosts.split(",")[0]
    return nodes, urlunsplit((scheme, first, parts.path, parts.query, ""))


class RedisStorage:
    """State in Redis or Redis Cluster, through redis-py's sync and asyncio clients.

    Build it from a URL (``redis://``, ``rediss://``, ``redis+cluster://h:p,h:p``) or
    pass ready clients. ``client`` is the asyncio client, ``sync_client`` the sync one;
    both are created lazily, each with its own connection pool.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        sync_client: Any = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        key_prefix: str = "sg",
    ) -> None:
        if url is None and client is None and sync_client is None:
            raise ConfigurationError("RedisStorage needs a url or a client", field="url")
        if connect_timeout <= 0 or socket_timeout <= 0:
            raise ConfigurationError("Redis timeouts must be positive", field="socket_timeout")
        self.url = url
        self.key_prefix = key_prefix
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.is_cluster = bool(url and "+cluster" in url.split("://", 1)[0])
        self._client = client
        self._sync_client = sync_client

    def _options(self) -> dict[str, Any]:
        return {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
        }

    @property
    def client(self) -> Any:
        """The ``redis.asyncio`` client (``Redis`` or ``RedisCluster``)."""
        if self._client is None:
            if self.url is None:
                raise ConfigurationError("no async client and no url to build one", field="url")
            if self.is_cluster:
                nodes, template = _cluster_nodes(self.url)
                from redis.asyncio.cluster import ClusterNode as AsyncClusterNode

                self._client = AsyncRedisCluster.from_url(
                    template,
                    startup_nodes=[AsyncClusterNode(h, p) for h, p in nodes],
                    **self._options(),
                )
            else:
                self._client = aioredis.Redis.from_url(self.url, **self._options())
        return self._client

    @property
    def sync_client(self) -> Any:
        """The sync ``redis`` client (``Redis`` or ``RedisCluster``)."""
        if self._sync_client is None:
            if self.url is None:
                raise ConfigurationError("no sync client and no url to build one", field="url")
            if self.is_cluster:
                nodes, template = _cluster_nodes(self.url)
                self._sync_client = RedisCluster.from_url(
                    template,
                    startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                    **self._options(),
                )
            else:
                self._sync_client = redis.Redis.from_url(self.url, **self._options())
        return self._sync_client

    def close_sync(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.close_sync()
