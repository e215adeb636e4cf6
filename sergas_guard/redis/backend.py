"""A Redis deployment named by a URL, running scripts: for a capability given a URL.

A breaker given ``storage="redis://..."`` keeps its state in Redis without building a
rate-limit storage: :class:`ScriptBackend` is the :class:`~sergas_guard.redis.runner.
ScriptRunner` of a URL, over the same clients (a server, Sentinel's master or a
cluster) and with the same defaults as :class:`~sergas_guard.storage.RedisStorage`.
Only our own URL options are accepted (redis-py's extra ones are not).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sergas_guard import validation
from sergas_guard.redis.client import RedisClient, SyncRedisClient, client_target
from sergas_guard.redis.cluster import AsyncClusterClient, SyncClusterClient
from sergas_guard.redis.runner import run_script_on, run_script_on_sync
from sergas_guard.redis.scripts import Script, ScriptArg
from sergas_guard.redis.url import DEFAULT_CONNECTIONS, ClusterTarget, parse_url
from sergas_guard.secrets import scrub, url_secrets

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "ScriptBackend"]

# The defaults of RedisStorage: a URL means the same deployment, whoever is given it.
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 5.0


class ScriptBackend:
    """Runs scripts on the deployment ``url`` names (clients built on first use).

    Raises ConfigurationError naming the option for a bad URL, a timeout that is not a
    positive number of seconds or an empty ``key_prefix``.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "sg",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.key_prefix = validation.name(key_prefix, "key_prefix", max_length=50)
        self._secrets = url_secrets(url) if isinstance(url, str) else ()
        target = parse_url(
            url,
            connect_timeout=validation.seconds(connect_timeout, "connect_timeout"),
            socket_timeout=validation.seconds(socket_timeout, "socket_timeout"),
            connections=connections,
        )
        self.safe_url = scrub(url, *self._secrets)
        self.is_cluster = isinstance(target, ClusterTarget)
        self._cluster_target = target if isinstance(target, ClusterTarget) else None
        self._single = None if isinstance(target, ClusterTarget) else client_target(target)
        self._async: RedisClient | AsyncClusterClient | None = None
        self._sync: SyncRedisClient | SyncClusterClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScriptBackend({self.safe_url!r})"

    def secrets(self) -> tuple[str, ...]:
        """The literal secrets of the URL, for scrubbing."""
        return self._secrets

    def _async_client(self) -> RedisClient | AsyncClusterClient:
        if self._async is None:
            if self._single is not None:
                target, resolver = self._single
                self._async = RedisClient(target, resolver=resolver, secrets=self._secrets)
            else:
                assert self._cluster_target is not None
                self._async = AsyncClusterClient(self._cluster_target, self._secrets)
        return self._async

    def _sync_client(self) -> SyncRedisClient | SyncClusterClient:
        if self._sync is None:
            with self._lock:  # threads racing to the first use share one client
                if self._sync is None:
                    if self._single is not None:
                        target, resolver = self._single
                        self._sync = SyncRedisClient(
                            target, resolver=resolver, secrets=self._secrets
                        )
                    else:
                        assert self._cluster_target is not None
                        self._sync = SyncClusterClient(self._cluster_target, self._secrets)
        return self._sync

    def run_script_sync(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Run ``script`` from a thread; its reply. Raises ConfigurationError for keys of
        different cluster slots, StorageUnavailable / StorageError when Redis fails."""
        return run_script_on_sync(self._sync_client(), script, keys, args, doing)

    async def run_script(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Async face of :meth:`run_script_sync`."""
        return await run_script_on(self._async_client(), script, keys, args, doing)

    def close_sync(self) -> None:
        """Close the connections of the sync face."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        """Close every connection."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close_sync()
