"""How many processes share a storage's limits: a heartbeat in Redis.

While Redis is unreachable each process decides alone, and ``fallback_share="auto"``
lets it enforce ``limit // peers`` of each limit, from the last peer count it read, so
that the fleet together stays within the limit (see docs/storage.md, "When Redis
fails"). The count comes from a sorted set ``<key_prefix>:peers`` per storage namespace:
member = one process (host, pid and a random token), score = the server's time (ms) of
its last heartbeat. One script adds the member, drops those not heard from for
:data:`PEER_TTL_SECONDS`, keeps the key expiring after as long, and returns how many
members remain: one round trip, on the server's clock (hosts' clocks may disagree).

A process beats after its first successful decision, again :data:`FIRST_RECOUNT_SECONDS`
later (processes started together each saw only those that beat before them), then
every :data:`HEARTBEAT_SECONDS`, always riding on a decision that just succeeded: on the
async face as one background task at a time, on the sync face in the deciding thread
(one extra round trip every few seconds; no timer thread, which would beat for
processes that decide nothing and outlive a fork). A process that makes no decisions
stops beating and drops out of the count: it uses no share.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import threading
from typing import Protocol, runtime_checkable

from sergas_guard.clock import Clock

__all__ = [
    "FIRST_RECOUNT_SECONDS",
    "HEARTBEAT_SCRIPT",
    "HEARTBEAT_SECONDS",
    "PEER_TTL_SECONDS",
    "HeartbeatStorage",
    "Peers",
    "process_id",
]

logger = logging.getLogger("sergas_guard.ratelimit.stores.peers")

HEARTBEAT_SECONDS = 5.0
FIRST_RECOUNT_SECONDS = 1.0
# Three missed heartbeats: a process paused by a long collection or a slow deploy step
# is still counted (counting one too many only makes the shares smaller).
PEER_TTL_SECONDS = 15.0

HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""


def peers_key(key_prefix: str) -> str:
    """The sorted set of the processes sharing a storage namespace."""
    return f"{key_prefix}:peers"


_identity: tuple[int, str] | None = None


def process_id() -> str:
    """This process's member in the peer set (a fork gets its own)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}")
    return _identity[1]


@runtime_checkable
class HeartbeatStorage(Protocol):
    """A storage that can count the processes sharing it (RedisStorage)."""

    def heartbeat_sync(self, member: str, ttl_ms: int) -> int:
        """Record ``member`` as alive; the number of members heard from within ``ttl_ms``."""
        ...

    async def heartbeat(self, member: str, ttl_ms: int) -> int:
        """Async face of :meth:`heartbeat_sync`."""
        ...


class Peers:
    """The last known number of processes sharing ``storage``, kept fresh by heartbeats.

    ``count`` is None until the first heartbeat has answered. A failed heartbeat changes
    nothing (the last count stands; the failover circuit judges the storage by its
    decisions) and is retried at the next due time.
    """

    def __init__(self, storage: HeartbeatStorage, clock: Clock) -> None:
        self._storage = storage
        self._monotonic = clock.monotonic
        self.count: int | None = None
        self.beats = 0
        self.failed_beats = 0
        #: Monotonic time of the next heartbeat; read on every successful decision.
        self.next_beat = -math.inf
        self._sync_beat = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def _schedule(self, now: float) -> None:
        self.next_beat = now + (FIRST_RECOUNT_SECONDS if self.beats <= 1 else HEARTBEAT_SECONDS)

    def _heard(self, count: int) -> None:
        self.beats += 1
        self.count = max(1, count)

    def _missed(self, error: Exception) -> None:
        self.failed_beats += 1
        logger.debug("heartbeat failed: %s", type(error).__name__)

    def beat_sync(self) -> None:
        """Beat now, in this thread, unless another thread is already beating."""
        if not self._sync_beat.acquire(blocking=False):
            return
        try:
            self._schedule(self._monotonic())
            try:
                self._heard(self._storage.heartbeat_sync(process_id(), _TTL_MS))
            except Exception as exc:  # a missed beat only leaves the last count standing
                self._missed(exc)
        finally:
            self._sync_beat.release()

    def beat_soon(self) -> None:
        """Beat in a background task of the running loop (at most one at a time)."""
        loop = asyncio.get_running_loop()
        task = self._task
        # (A task of a loop that has since closed never finishes: it is left behind.)
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._schedule(self._monotonic())
        self._task = loop.create_task(self._beat())

    async def _beat(self) -> None:
        try:
            self._heard(await self._storage.heartbeat(process_id(), _TTL_MS))
        except Exception as exc:
            self._missed(exc)

    def share(self, amount: int) -> int:
        """This process's part of ``amount``: ``amount // peers``, at least 1."""
        return max(1, amount // (self.count or 1))

    async def aclose(self) -> None:
        """Stop a heartbeat in flight (the storage is closing)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # the caller of aclose() itself was cancelled


_TTL_MS = int(PEER_TTL_SECONDS * 1000)
