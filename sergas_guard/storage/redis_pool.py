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
from redis._parsers import BaseParser
from redis.maint_notifications import MaintNotificationsConfig

__all__ = ["AsyncConnections", "ReplyTimeout", "SyncConnections"]


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


def _decision_options(options: dict[str, Any]) -> dict[str, Any]:
    """The pool's connection options, for connections that only run our script.

    No socket timeout (each call has its deadline). No maintenance push notifications:
    a push arriving before a reply would be read as the reply. No ``CLIENT SETINFO``
    unless the caller set a library name: Redis before 7.2 refuses it, and redis-py
    raises and swallows each refusal, leaving error, traceback and frames in a cycle
    per connection for the garbage collector.
    """
    chosen = {**options, "socket_timeout": None}
    chosen.pop("maint_notifications_pool_handler", None)
    chosen["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if not {"driver_info", "lib_name", "lib_version"} & options.keys():
        chosen["driver_info"] = None
    return chosen


class ReplyTimeout(Exception):
    """No reply within the deadline (set on the connection's reader by the watchdog)."""


class AsyncConnections:
    """Connections for async decisions: at most ``limit``; past it, tasks queue for one.

    :meth:`call` runs one command on a free connection: it writes the pre-encoded bytes
    and reads one reply straight from the connection's stream within ``timeout``
    seconds (connecting, when needed, within ``connect_timeout`` more). A connection
    that broke is retried up to ``retries`` times on a fresh socket; one that timed out
    never is (the script may have run). A waiting task gets a connection as soon as
    another gives one back, or fails with a ConnectionError after ``timeout`` seconds.
    Connections are made like the redis-py pool's own (class and options: TLS,
    passwords, database), without a socket timeout of their own.

    Deadlines are kept by one watchdog timer per pool, not one timer per call: every
    call has the same timeout, so the calls in flight, in the order they started, are
    also in the order of their deadlines; the watchdog fires at the earliest one, fails
    the overdue reads through their streams and sleeps until the next deadline.
    """

    def __init__(
        self,
        pool: Any,
        limit: int,
        timeout: float,
        connect_timeout: float | None = None,
        retries: int = 0,
    ) -> None:
        self._class: Any = pool.connection_class
        self._options = _decision_options(pool.connection_kwargs)
        self._limit = limit
        self._timeout = timeout
        self._connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._retries = retries
        self._opened = 0
        self._idle: list[Any] = []
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        # Readers awaiting a reply -> their deadline (loop time), oldest first.
        self._busy: dict[asyncio.StreamReader, float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None

    async def call(self, command: bytes) -> bytes | None:
        """Send ``command`` and return its reply, a RESP bulk string, without its framing.

        Returns None when Redis answers NOSCRIPT (the caller resends with EVAL); raises
        redis-py's exception for any other error reply, redis.TimeoutError when no
        reply came in time, redis.ConnectionError when the connection broke on every try.

        The reply is read from the connection's own stream (redis-py's ``_reader``),
        not through redis-py's reader, whose layers of coroutines and per-read timeout
        cost more than the decision; a deadline fails the read through the stream, so
        no task is cancelled on the way. A connection in doubt is closed.
        """
        idle = self._idle
        connection = idle.pop() if idle else await self.take()
        busy = self._busy
        attempt = 0
        try:
            while True:
                reader = connection._reader  # redis-py's StreamReader while connected
                try:
                    if reader is None or reader.at_eof():
                        reader = await self._connect(connection)
                    connection._writer.write(command)
                    self._watch(reader)
                    head = await reader.readuntil(b"\r\n")
                    kind = head[:1]
                    if kind == b"$":
                        size = int(head[1:-2])
                        reply = (await reader.readexactly(size + 2))[:-2] if size >= 0 else b""
                    elif kind == b"-":
                        reply = head[1:-2]
                    else:
                        raise redis.exceptions.InvalidResponse(f"unexpected reply {head[:40]!r}")
                except ReplyTimeout as exc:
                    # The reader holds this error, and the error's traceback holds frames
                    # that hold the reader: without the traceback, no cycle is left for
                    # the garbage collector.
                    exc.__traceback__ = None
                    await self._drop(connection, reader)
                    reader = None
                    raise redis.TimeoutError(
                        f"Timeout: no reply within {self._timeout:g} s"
                    ) from None
                except (OSError, asyncio.IncompleteReadError, redis.ConnectionError) as exc:
                    if isinstance(exc, OSError):
                        exc.__traceback__ = None  # possibly the reader's too, as above
                    await self._drop(connection, reader)
                    reader = None
                    if attempt >= self._retries:
                        if isinstance(exc, redis.ConnectionError):
                            raise
                        raise redis.ConnectionError(
                            f"connection lost: {type(exc).__name__}: {exc}"
                        ) from None
                    attempt += 1  # a broken connection: the command never ran
                    continue
                except BaseException:
                    # Cancelled, or a reply we cannot read: a late reply must never be
                    # read as the next command's.
                    await self._drop(connection, reader)
                    reader = None
                    raise
                busy.pop(reader, None)
                break
            if reader.exception() is not None:
                # The deadline passed after the reply arrived: the reply stands, the
                # stream is spent.
                await connection.disconnect(nowait=True)
        finally:
            self.give(connection)
        if kind == b"-":
            if reply.startswith(b"NOSCRIPT"):
                return None
            # redis-py's exception for the error code (READONLY, LOADING, BUSY...).
            raise BaseParser.parse_error(reply.decode("utf-8", "replace"))  # type: ignore[no-untyped-call]
        return reply

    async def _drop(self, connection: Any, reader: asyncio.StreamReader | None) -> None:
        """Close a connection in doubt and stop watching its reader."""
        self._busy.pop(reader, None)  # type: ignore[arg-type]
        await connection.disconnect(nowait=True)

    def _watch(self, reader: asyncio.StreamReader) -> None:
        """Give ``reader``'s reply ``timeout`` seconds from now."""
        loop = asyncio.get_running_loop()
        self._busy[reader] = loop.time() + self._timeout
        if self._watchdog is None or self._watch_loop is not loop:
            self._watch_loop = loop
            self._watchdog = loop.call_at(loop.time() + self._timeout, self._patrol)

    def _patrol(self) -> None:
        """Fail the reads past their deadline; wake up again at the next deadline."""
        self._watchdog = None
        loop = self._watch_loop
        assert loop is not None
        now = loop.time()
        overdue = []
        for reader, deadline in self._busy.items():
            if deadline > now:
                self._watchdog = loop.call_at(deadline, self._patrol)
                break
            overdue.append(reader)
        for reader in overdue:
            del self._busy[reader]
            # A fresh exception each time: a shared one would keep the traceback, and
            # so the frames, of the last read it failed.
            reader.set_exception(ReplyTimeout())

    async def _connect(self, connection: Any) -> asyncio.StreamReader:
        """(Re)connect, with its handshake, within the connect and reply timeouts."""
        if connection.is_connected:
            await connection.disconnect(nowait=True)  # the server closed it
        deadline = self._connect_timeout + self._timeout
        try:
            async with asyncio.timeout(deadline):
                await connection.connect()
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise redis.TimeoutError(f"Timeout: not connected within {deadline:g} s") from None
        return connection._reader  # type: ignore[no-any-return]

    async def take(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._opened < self._limit:
            self._opened += 1
            return self._class(**self._options)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except TimeoutError:
            self._pass_on(waiter)
            raise redis.ConnectionError(
                f"all {self._limit} connections stayed busy for {self._timeout:g} s"
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
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
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
