"""Connections of a RedisStorage's own for rate-limit decisions on a single server.

redis-py's pools do bookkeeping on every command (a lock, a health poll, counters for its
observability hooks); a decision is cheap enough in Redis for that to dominate. These
pools hand out connections made like the redis-py pool's own (same class and options: TLS,
passwords and databases apply) and do nothing else per call.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import deque
from typing import Any

import redis

__all__ = ["AsyncConnections", "SyncConnections"]


class SyncConnections:
    """Connections for sync decisions on one server, the most recently used first.

    A thread takes one for a round trip and gives it back; ``list.pop`` and ``append``
    are atomic, so no lock, no health poll and no bookkeeping per call. As many as
    threads decide at once. Made like the redis-py pool's own (same class and options).
    """

    def __init__(self, pool: Any) -> None:
        self._class: Any = pool.connection_class
        self._options: dict[str, Any] = pool.connection_kwargs
        self._idle: list[Any] = []
        _FORKABLE.add(self)

    def take(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            return self._class(**self._options)

    def give(self, connection: Any) -> None:
        self._idle.append(connection)

    def forget(self) -> None:
        """Drop every connection without closing it (a forked child shares the sockets)."""
        self._idle = []

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


class AsyncConnections:
    """Connections for async decisions: at most ``limit``; past it, tasks queue for one.

    A waiting task gets a connection as soon as another task gives one back, or fails
    with a ConnectionError after ``wait`` seconds. Connections are made without a socket
    timeout: the storage bounds each round trip itself.
    """

    def __init__(self, pool: Any, limit: int, wait: float) -> None:
        self._class: Any = pool.connection_class
        self._options: dict[str, Any] = {**pool.connection_kwargs, "socket_timeout": None}
        self._limit = limit
        self._wait = wait
        self._opened = 0
        self._idle: list[Any] = []
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    async def take(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._opened < self._limit:
            self._opened += 1
            return self._class(**self._options)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._wait):
                return await waiter
        except TimeoutError:
            self._pass_on(waiter)
            raise redis.ConnectionError(
                f"all {self._limit} connections stayed busy for {self._wait:g} s"
            ) from None
        except BaseException:
            self._pass_on(waiter)
            raise

    def _pass_on(self, waiter: asyncio.Future[Any]) -> None:
        """A waiter that gives up: a connection handed to it too late goes to the next."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.give(waiter.result())
        else:
            waiter.cancel()

    def give(self, connection: Any) -> None:
        if self._closed:
            # Back from a decision that outlived close(): close it too, never leak it.
            task = asyncio.ensure_future(connection.disconnect(nowait=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    async def close(self) -> None:
        """Close idle connections now, busy ones as they come back; waiters fail."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(redis.ConnectionError("the storage was closed"))
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


# Pools of connections a forked child must not reuse (their sockets are the parent's).
_FORKABLE: weakref.WeakSet[SyncConnections] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for connections in list(_FORKABLE):
        connections.forget()


os.register_at_fork(after_in_child=_forget_after_fork)
