"""Redis storage: shared state for a fleet of workers.

Every rate-limit decision is one EVALSHA of the script in
:mod:`sergas_guard.ratelimit.stores.script`, which decides all the limits of one identity together
on the server's clock. Built from a URL, decisions go through :mod:`sergas_guard.redis`:
a small fixed number of multiplexed connections per process and node
(``max_connections``, default 1) on which concurrent decisions are pipelined, with the
pre-encoded call written as is; on a cluster, to each key's node (``MOVED``/``ASK``
followed). Resets and clears go through it too on a single server (through redis-py's
``SCAN`` of every primary on a cluster). A storage built from ready redis-py clients
decides through them.
Breakers, flags and the peer-count heartbeat run their scripts through
:meth:`RedisStorage.run_script` (the same clients, every URL kind). The redis-py clients
(:attr:`RedisStorage.client`, :attr:`RedisStorage.sync_client`) remain for given
clients and a cluster's ``SCAN``.
Errors surface as :class:`~sergas_guard.errors.StorageUnavailable` (cannot reach
Redis) or :class:`~sergas_guard.errors.StorageError` (Redis answered with an error).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)

from sergas_guard import validation
from sergas_guard.errors import ConfigurationError, StorageError, StorageUnavailable
from sergas_guard.ratelimit.result import RateLimitResult
from sergas_guard.ratelimit.stores import peers
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.script import (
    DECIDE,
    encode_call,
    parse_reply,
    script_args,
)
from sergas_guard.redis.backend import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT
from sergas_guard.redis.client import RedisClient, SyncRedisClient, client_target
from sergas_guard.redis.cluster import AsyncClusterClient, SyncClusterClient, key_slot
from sergas_guard.redis.connection import NotSent
from sergas_guard.redis.errors import from_exception
from sergas_guard.redis.protocol import ErrorReply
from sergas_guard.redis.runner import run_script_on, run_script_on_sync
from sergas_guard.redis.scripts import Script, ScriptArg
from sergas_guard.redis.url import DEFAULT_CONNECTIONS, ClusterTarget, SingleTarget, parse_url
from sergas_guard.secrets import credentials_problem, scrub, scrub_url, url_secrets

__all__ = ["RedisStorage", "check_redis_url"]

# The peer-count heartbeat behind fallback_share="auto" (storage/peers.py).
HEARTBEAT = Script(peers.HEARTBEAT_SCRIPT)

# redis-py's immediate retries on a broken connection (cluster and ready-client paths
# only); never on a timeout, since the script may have run and a retry would count twice.
DEFAULT_RETRIES = 1
# Multiplexed connections per process (per face, per node): see DEFAULT_CONNECTIONS.
DEFAULT_MAX_CONNECTIONS = DEFAULT_CONNECTIONS
# Bounds of the options: more retries would only multiply an outage's latency, more
# connections exhaust the server's file descriptors before helping.
MAX_RETRIES = 10
MAX_CONNECTIONS = 1000
_SCAN_COUNT = 1000
_DELETE_BATCH = 500

# What redis-py's own retries may repeat: a broken connection, not a timeout (redis-py's
# default also retries timeouts, which could run a script twice).
_RETRIED: tuple[type[RedisError], ...] = (redis.ConnectionError,)

# Errors meaning "Redis cannot answer now" rather than "Redis refused this".
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
    OSError,
)


def _cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str]:
    """Split ``redis+cluster://[user:pw@]h1:p1,h2:p2/...`` into nodes and a template URL."""
    parts = urlsplit(url)
    netloc = parts.netloc
    auth, _, hosts = netloc.rpartition("@")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            node = scrub(host_port, *url_secrets(url))
            raise ConfigurationError(f"cluster node {node!r} must be host:port", field="storage")
        nodes.append((host, int(port)))
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    first = f"{auth}@{hosts.split(',')[0]}" if auth else hosts.split(",")[0]
    return nodes, urlunsplit((scheme, first, parts.path, parts.query, ""))


class RedisStorage:
    """State in Redis or Redis Cluster.

    Build it from a URL (``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://h:p,h:p``, ``redis+sentinel://h:p,h:p/service``) or pass ready
    redis-py clients. On a single server, decisions use :mod:`sergas_guard.redis`:
    ``max_connections`` multiplexed connections per face (async, sync) however many
    decisions are in flight, with the given connect and socket timeouts (seconds); a
    decision is never retried once it may have reached the server. ``client`` (asyncio)
    and ``sync_client`` are redis-py clients, created lazily, for given clients and a
    cluster's ``SCAN`` (there ``retries`` immediate retries of a command whose
    connection broke, never of one that timed out).
    ``key_prefix`` is what :meth:`clear` deletes when given no prefix.
    Raises ConfigurationError naming the option for a bad URL, a timeout that is not a
    positive number of seconds (at most 100 years), ``retries`` outside 0-10,
    ``max_connections`` outside 1-1,000 or an empty ``key_prefix``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        sync_client: Any = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        key_prefix: str = "sg",
    ) -> None:
        if url is None and client is None and sync_client is None:
            raise ConfigurationError("RedisStorage needs a url or a client", field="url")
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"url must be a string, not {type(url).__name__}", field="url")
        self.url = url
        self.key_prefix = validation.name(key_prefix, "key_prefix", max_length=50)
        self.connect_timeout = validation.seconds(connect_timeout, "connect_timeout")
        self.socket_timeout = validation.seconds(socket_timeout, "socket_timeout")
        self.retries = validation.whole(retries, "retries", minimum=0, maximum=MAX_RETRIES)
        self.max_connections = validation.whole(
            max_connections, "max_connections", minimum=1, maximum=MAX_CONNECTIONS
        )
        self._client = client
        self._sync_client = sync_client
        self._async_ready = False
        self._cluster_lock: asyncio.Lock | None = None
        self._build_lock = threading.Lock()
        self._secrets = url_secrets(url) if url else ()
        # The single server our own connections serve (None: decisions go through redis-py).
        self._target: SingleTarget | None = None
        self._resolver: Any = None
        self._redis: RedisClient | None = None
        self._sync_redis: SyncRedisClient | None = None
        # The cluster our own per-node connections serve (None: not a cluster URL).
        self._cluster_target: ClusterTarget | None = None
        self._cluster: AsyncClusterClient | None = None
        self._sync_cluster: SyncClusterClient | None = None
        self.is_cluster = isinstance(client or sync_client, RedisCluster | AsyncRedisCluster)
        if url:
            sentinel = "+sentinel" in url.split("://", 1)[0].lower()
            if not sentinel:
                check_redis_url(url, cluster="+cluster" in url.split("://", 1)[0].lower())
            target = parse_url(
                url,
                connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
                connections=self.max_connections,
                foreign=_redis_py_options(),
            )
            if isinstance(target, ClusterTarget):
                self.is_cluster = True
                self._cluster_target = target
            else:
                self.is_cluster = False
                self._target, self._resolver = client_target(target)

    def __repr__(self) -> str:
        return f"RedisStorage({self.safe_url or 'client'!r})"

    @property
    def safe_url(self) -> str | None:
        """The URL with its password and secret parameters replaced by ``***``."""
        return scrub(self.url, *self._secrets) if self.url else None

    def secrets(self) -> tuple[str, ...]:
        """The literal secrets of the URL (password, secret parameters), for scrubbing."""
        return self._secrets

    def _options(self, retry: Any) -> dict[str, Any]:
        return {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry": retry,
        }

    @property
    def redis(self) -> RedisClient | None:
        """Our asyncio client of the single server (None on a cluster or given clients)."""
        if self._redis is None and self._target is not None:
            self._redis = RedisClient(self._target, resolver=self._resolver, secrets=self._secrets)
            self._redis.register(DECIDE)  # loaded by each connection's handshake
        return self._redis

    @property
    def sync_redis(self) -> SyncRedisClient | None:
        """Our client for threads of the single server (None on a cluster or given clients)."""
        if self._sync_redis is None and self._target is not None:
            with self._build_lock:  # threads racing to the first use share one client
                if self._sync_redis is None:
                    self._sync_redis = SyncRedisClient(
                        self._target, resolver=self._resolver, secrets=self._secrets
                    )
                    self._sync_redis.register(DECIDE)
        return self._sync_redis

    @property
    def cluster(self) -> AsyncClusterClient | None:
        """Our asyncio client of the cluster (None unless built from a cluster URL)."""
        if self._cluster is None and self._cluster_target is not None:
            self._cluster = AsyncClusterClient(self._cluster_target, self._secrets)
            self._cluster.register(DECIDE)
        return self._cluster

    @property
    def sync_cluster(self) -> SyncClusterClient | None:
        """Our client for threads of the cluster (None unless built from a cluster URL)."""
        if self._sync_cluster is None and self._cluster_target is not None:
            with self._build_lock:
                if self._sync_cluster is None:
                    self._sync_cluster = SyncClusterClient(self._cluster_target, self._secrets)
                    self._sync_cluster.register(DECIDE)
        return self._sync_cluster

    def _slot(self, checks: Sequence[LimitCheck]) -> int:
        """The one cluster slot of the keys decided together (ConfigurationError if not)."""
        slot = key_slot(checks[0].key.encode())
        for check in checks[1:]:
            if key_slot(check.key.encode()) != slot:
                keys = [c.key for c in checks]
                raise ConfigurationError(
                    "on Redis Cluster the keys decided together must share a hash slot; put "
                    f"the identity in a {{hash tag}} (keys: {keys!r:.200})",
                    field="checks",
                )
        return slot

    @property
    def client(self) -> Any:
        """The ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) of redis-py."""
        if self._client is None:
            if self.url is None:
                raise ConfigurationError("no async client and no url to build one", field="url")
            self._check_redis_py_url()
            options = self._options(redis.asyncio.retry.Retry(NoBackoff(), self.retries, _RETRIED))
            if self.is_cluster:
                nodes, template = _cluster_nodes(_for_redis_py(self.url))
                from redis.asyncio.cluster import ClusterNode as AsyncClusterNode

                self._client = AsyncRedisCluster.from_url(
                    template, startup_nodes=[AsyncClusterNode(h, p) for h, p in nodes], **options
                )
            else:
                # Blocking: past its 50 connections (for flags, breakers and health, not
                # decisions), a command waits for a free one instead of failing with
                # "Too many connections".
                pool = aioredis.BlockingConnectionPool.from_url(
                    _for_redis_py(self.url),
                    max_connections=50,
                    timeout=self.socket_timeout,
                    **options,
                )
                self._client = aioredis.Redis.from_pool(pool)
        return self._client

    @property
    def sync_client(self) -> Any:
        """The sync ``redis`` client (``Redis`` or ``RedisCluster``) of redis-py."""
        if self._sync_client is None:
            # Threads may race to the first use; one of them builds the one pool.
            with self._build_lock:
                if self._sync_client is None:
                    self._sync_client = self._build_sync_client()
        return self._sync_client

    def _check_redis_py_url(self) -> None:
        if self.url and "+sentinel" in self.url.split("://", 1)[0].lower():
            raise ConfigurationError(
                "redis-py clients are not built for redis+sentinel:// URLs", field="url"
            )

    def _build_sync_client(self) -> Any:
        if self.url is None:
            raise ConfigurationError("no sync client and no url to build one", field="url")
        self._check_redis_py_url()
        options = self._options(redis.retry.Retry(NoBackoff(), self.retries, _RETRIED))
        if self.is_cluster:
            nodes, template = _cluster_nodes(_for_redis_py(self.url))
            return RedisCluster.from_url(
                template,
                startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                **options,
            )
        return redis.Redis.from_url(_for_redis_py(self.url), **options)

    # -- decisions ------------------------------------------------------------------

    def _prepare(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> tuple[list[str], list[int | bytes]]:
        keys, args = script_args(checks, cost, now_us)
        if len(keys) > 1 and len({key_slot(k.encode()) for k in keys}) > 1:
            raise ConfigurationError(
                "on Redis Cluster the keys decided together must share a hash slot; put the "
                f"identity in a {{hash tag}} (keys: {keys!r:.200})",
                field="checks",
            )
        return keys, args

    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """Our error for a driver's, with any password scrubbed out of its message."""
        if isinstance(exc, StorageError):
            return exc
        message = scrub(f"Redis {doing} failed: {type(exc).__name__}: {exc}", *self._secrets)
        if isinstance(exc, _UNAVAILABLE):
            return StorageUnavailable(message)
        return StorageError(message)

    def decide_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Decide ``checks`` together in one script run (see the storage protocol).

        Raises ConfigurationError for a cost above a limit's capacity or, on a cluster,
        keys in different slots; StorageUnavailable / StorageError when Redis fails.
        """
        client = self._sync_redis or self.sync_redis
        if client is None:
            if self._cluster_target is None:
                return self._decide_redis_py_sync(checks, cost, now_us)
            return self._decide_cluster_sync(checks, cost, now_us)
        call = encode_call(checks, cost, now_us)
        try:
            reply = client.run_script(DECIDE, call, doing="decision")
        except StorageError:
            raise
        except Exception as exc:  # our client's bugs are storage errors too
            raise from_exception(exc, "decision", self._secrets) from exc
        return parse_reply(reply, checks)

    async def decide(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Async face of :meth:`decide_sync`."""
        client = self._redis or self.redis
        if client is None:
            if self._cluster_target is None:
                return await self._decide_redis_py(checks, cost, now_us)
            return await self._decide_cluster(checks, cost, now_us)
        call = encode_call(checks, cost, now_us)
        try:
            # The hot path: the pre-encoded call straight onto an open connection's
            # pipeline (no coroutine layers in between).
            connection = client.pick()
            try:
                reply = await connection.submit(call)
            except NotSent:  # the connection dropped before writing it: once more
                reply = await connection.call(call)
            if type(reply) is ErrorReply:
                reply = await client.settle(DECIDE, call, reply, "decision", connection)
        except StorageError:
            raise
        except Exception as exc:  # our client's bugs are storage errors too
            raise from_exception(exc, "decision", self._secrets) from exc
        return parse_reply(reply, checks)

    # -- decisions on a cluster: our per-node connections, following redirections -----

    def _decide_cluster_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> list[RateLimitResult]:
        call = encode_call(checks, cost, now_us)
        slot = self._slot(checks)
        cluster = self._sync_cluster or self.sync_cluster
        assert cluster is not None
        try:
            reply = cluster.run_script(DECIDE, call, slot, "decision")
        except StorageError:
            raise
        except Exception as exc:  # our client's bugs are storage errors too
            raise from_exception(exc, "decision", self._secrets) from exc
        return parse_reply(reply, checks)

    async def _decide_cluster(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> list[RateLimitResult]:
        call = encode_call(checks, cost, now_us)
        slot = self._slot(checks)
        cluster = self._cluster or self.cluster
        assert cluster is not None
        try:
            reply = await cluster.run_script(DECIDE, call, slot, "decision")
        except StorageError:
            raise
        except Exception as exc:  # our client's bugs are storage errors too
            raise from_exception(exc, "decision", self._secrets) from exc
        return parse_reply(reply, checks)

    # -- decisions through redis-py, on the clients a caller gave (it routes a cluster's) --

    def _decide_redis_py_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> list[RateLimitResult]:
        keys, args = self._prepare(checks, cost, now_us)
        return parse_reply(self._run_redis_py_sync(DECIDE, keys, args, "decision"), checks)

    async def _decide_redis_py(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> list[RateLimitResult]:
        keys, args = self._prepare(checks, cost, now_us)
        return parse_reply(await self._run_redis_py(DECIDE, keys, args, "decision"), checks)

    def _run_redis_py_sync(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[ScriptArg], doing: str
    ) -> Any:
        """``script`` through the given redis-py client: EVALSHA, EVAL after NOSCRIPT."""
        try:
            client = self.sync_client  # a cluster client connects on creation
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return client.eval(script.body, len(keys), *keys, *args)
        except ConfigurationError:
            raise
        except Exception as exc:  # the driver's errors, and its bugs, are storage errors
            raise self._error(exc, doing) from exc

    async def _run_redis_py(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[ScriptArg], doing: str
    ) -> Any:
        """Async face of :meth:`_run_redis_py_sync`."""
        try:
            client = self._client if self._async_ready else await self._ready_client()
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script.body, len(keys), *keys, *args)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise self._error(exc, doing) from exc

    async def _ready_client(self) -> Any:
        """The async client; a cluster client learns its slot map once, before any command.

        redis-py's asyncio cluster client, when first used by many tasks at once, sends
        commands before it knows the slots and corrupts connections on the MOVED replies.
        """
        client = self.client
        if not self.is_cluster:
            self._async_ready = True  # nothing to learn: the fast path from now on
        elif not self._async_ready:
            if self._cluster_lock is None:
                self._cluster_lock = asyncio.Lock()
            async with self._cluster_lock:
                if not self._async_ready:
                    await client.initialize()
                    self._async_ready = True
        return client

    # -- scripts of every capability: one dispatch over single, Sentinel, Cluster, given ----

    def run_script_sync(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Run ``script`` on ``keys`` with ``args``; its reply (bytes, int, None or lists).

        Goes to our connections on a single server, Sentinel's master or a cluster
        (EVALSHA, EVAL once after NOSCRIPT, never retried after a timeout), through
        redis-py on given clients. ``doing`` names the work in error messages. Raises
        ConfigurationError when a cluster's keys are on different slots,
        StorageUnavailable when Redis cannot answer, StorageError for an error reply.
        """
        own = self._sync_redis or self.sync_redis or self._sync_cluster or self.sync_cluster
        if own is not None:
            return run_script_on_sync(own, script, keys, args, doing)
        return self._run_redis_py_sync(script, keys, args, doing)

    async def run_script(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Async face of :meth:`run_script_sync`."""
        own = self._redis or self.redis or self._cluster or self.cluster
        if own is not None:
            return await run_script_on(own, script, keys, args, doing)
        return await self._run_redis_py(script, keys, args, doing)

    # -- peers: the heartbeat behind fallback_share="auto" (storage/peers.py) ----------

    def heartbeat_sync(self, member: str, ttl_ms: int) -> int:
        """Record ``member`` in the peer set; how many processes share this storage.

        Raises StorageUnavailable / StorageError when Redis fails.
        """
        key = peers.peers_key(self.key_prefix)
        return int(self.run_script_sync(HEARTBEAT, [key], [member, ttl_ms], "heartbeat"))

    async def heartbeat(self, member: str, ttl_ms: int) -> int:
        """Async face of :meth:`heartbeat_sync`."""
        key = peers.peers_key(self.key_prefix)
        return int(await self.run_script(HEARTBEAT, [key], [member, ttl_ms], "heartbeat"))

    # -- reset and clear: SCAN, never KEYS (on a cluster, every primary) -----------

    def _scan_pattern(self, prefix: str) -> str:
        return _glob_escape(prefix or self.key_prefix) + "*"

    def _scan_sync(self, pattern: str) -> Iterator[Any]:
        own = self.sync_redis
        if own is None:
            return self.sync_client.scan_iter(match=pattern, count=_SCAN_COUNT)  # type: ignore[no-any-return]
        return _scan_own_sync(own, pattern)

    def _delete_sync(self, keys: Iterator[Any]) -> int:
        own = self.sync_redis
        deleted = 0
        for batch in _batches(keys):
            if own is None:
                deleted += self.sync_client.unlink(*batch)
            else:
                deleted += own.call(b"UNLINK", *batch)
        return deleted

    def reset_sync(self, key: str) -> None:
        """Delete ``key`` and every key it is a prefix of."""
        try:
            self._delete_sync(iter([key.encode()]))
            self._delete_sync(self._scan_sync(_glob_escape(key) + "*"))
        except (RedisError, RedisClusterException, OSError, StorageError) as exc:
            raise self._error(exc, "reset") from exc

    def clear_sync(self, prefix: str = "") -> int:
        """Delete every key starting with ``prefix`` (default: ``key_prefix``); returns how many."""
        try:
            return self._delete_sync(self._scan_sync(self._scan_pattern(prefix)))
        except (RedisError, RedisClusterException, OSError, StorageError) as exc:
            raise self._error(exc, "clear") from exc

    async def _delete(self, keys: AsyncIterator[Any]) -> int:
        own = self.redis
        deleted = 0
        batch: list[Any] = []

        async def unlink(batch: list[Any]) -> int:
            if own is None:
                return int(await self.client.unlink(*batch))
            return int(await own.call(b"UNLINK", *batch))

        async for key in keys:
            batch.append(key)
            if len(batch) >= _DELETE_BATCH:
                deleted += await unlink(batch)
                batch = []
        if batch:
            deleted += await unlink(batch)
        return deleted

    async def _scan(self, pattern: str) -> AsyncIterator[Any]:
        own = self.redis
        if own is None:
            await self._ready_client()
            async for key in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
                yield key
            return
        cursor = b"0"
        while True:
            cursor, keys = await own.call(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", _SCAN_COUNT)
            for key in keys:
                yield key
            if cursor == b"0":
                return

    async def reset(self, key: str) -> None:
        """Async face of :meth:`reset_sync`."""
        try:
            await self._delete(_one(key.encode()))
            await self._delete(self._scan(_glob_escape(key) + "*"))
        except (RedisError, RedisClusterException, OSError, StorageError) as exc:
            raise self._error(exc, "reset") from exc

    async def clear(self, prefix: str = "") -> int:
        """Async face of :meth:`clear_sync`."""
        try:
            return await self._delete(self._scan(self._scan_pattern(prefix)))
        except (RedisError, RedisClusterException, OSError, StorageError) as exc:
            raise self._error(exc, "clear") from exc

    # -- lifecycle ------------------------------------------------------------------

    def close_sync(self) -> None:
        if self._sync_cluster is not None:
            self._sync_cluster.close()
            self._sync_cluster = None
        if self._sync_redis is not None:
            self._sync_redis.close()
            self._sync_redis = None
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        if self._cluster is not None:
            await self._cluster.aclose()
            self._cluster = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._async_ready = False
        self.close_sync()


def _scan_own_sync(client: SyncRedisClient, pattern: str) -> Iterator[Any]:
    cursor = b"0"
    while True:
        cursor, keys = client.call(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", _SCAN_COUNT)
        yield from keys
        if cursor == b"0":
            return


async def _one(key: bytes) -> AsyncIterator[bytes]:
    yield key


def _redis_py_options() -> frozenset[str]:
    """Query parameters redis-py's clients take (accepted in our URLs, used by them)."""
    return (
        _parameters(redis.Connection) | _parameters(redis.SSLConnection) | _parameters(RedisCluster)
    )


def check_redis_url(url: str, *, cluster: bool = False) -> None:
    """Refuse at construction what the driver would refuse at the first command.

    redis-py reads the URL only when it builds a client (a cluster client's later
    still), and passes query parameters it does not know to the connection's
    constructor: a misspelt or garbled parameter would be a TypeError deep inside the
    first decision, quoting the parameter's name, which may be part of a password.
    Raises ConfigurationError with the URL scrubbed.
    """
    problem = credentials_problem(url)
    if problem:
        raise ConfigurationError(problem, field="url")
    template = _cluster_nodes(url)[1] if cluster else url
    try:
        options = redis.connection.parse_url(template)  # type: ignore[no-untyped-call]
    except ValueError as exc:  # its words name the parameter, never the value
        raise ConfigurationError(f"{scrub_url(url)!r}: {exc}", field="url") from None
    known = _parameters(options.get("connection_class", redis.Connection))
    if cluster:
        known |= _parameters(RedisCluster)
    known |= _OURS_ONLY
    unknown = sorted(name for name in options if name not in known)
    if unknown:
        raise ConfigurationError(
            f"{scrub_url(url)!r} has {len(unknown)} query parameter(s) Redis connections do "
            "not take (percent-encode '&' and '=' in a password given as ?password=)",
            field="url",
        )


# Query parameters of ours that redis-py's clients do not take (dropped for them).
_OURS_ONLY = frozenset({"connections"})


def _for_redis_py(url: str) -> str:
    """``url`` without the query parameters only our connections take."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [p for p in parts.query.split("&") if p.split("=", 1)[0] not in _OURS_ONLY]
    return urlunsplit(parts._replace(query="&".join(kept)))


def _parameters(client_class: type) -> frozenset[str]:
    """Names a redis-py connection (with its pool) or cluster client accepts, from the
    constructors' signatures."""
    names = {"connection_class", "max_connections"}
    for cls in client_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return frozenset(names - {"self", "args", "kwargs"})


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _batches(keys: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= _DELETE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
