"""Connections of a RedisStorage's own for rate-limit decisions on a single server.

redis-py's pools do bookkeeping on every command (a lock, a health poll, counters for its
observability hooks); a decision is cheap enough in Redis for that to dominate. These
pools hand out connections made like the redis-py pool's own (same class and options: TLS,
passwords and databases apply) and do nothing else per call. On the async side, replies
are read by a small protocol of ours once redis-py has shaken hands, and one watchdog
timer per pool keeps every call's deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
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
        self._options = _decision_options(pool.connection_kwargs)
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

    No maintenance push notifications: a push arriving before a reply would be read as
    the reply by the async reader, and neither face has a use for them. No ``CLIENT SETINFO``
    unless the caller set a library name: Redis before 7.2 refuses it, and redis-py
    raises and swallows each refusal, leaving error, traceback and frames in a cycle
    per connection for the garbage collector.
    """
    chosen = dict(options)
    chosen.pop("maint_notifications_pool_handler", None)
    chosen["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if not {"driver_info", "lib_name", "lib_version"} & options.keys():
        chosen["driver_info"] = None
    return chosen


class ReplyTimeout(Exception):
    """No reply within the deadline (set on the connection's reply reader by the watchdog)."""


class _Replies(asyncio.Protocol):
    """Reads the replies of one decision connection, taken over from redis-py's stream.

    redis-py connects and shakes hands (TLS, AUTH, HELLO, SELECT); then this protocol
    receives the socket's data, and each call awaits one future that
    :meth:`data_received` resolves with the parsed reply: ``bytes`` for a bulk string,
    ``str`` for an error. redis-py's own protocol is told when the connection is lost,
    so that its close handshake completes as usual.
    """

    def __init__(self, stream_protocol: asyncio.BaseProtocol) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes | str] | None = None
        self.lost = False
        self._stream_protocol = stream_protocol

    def expect(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[bytes | str]:
        """The future of the next reply (to await at once: a future kept in a local
        would make a cycle with the traceback of its exception)."""
        waiter = self.waiter = loop.create_future()
        return waiter

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        waiter = self.waiter
        if waiter is None:
            return  # unasked for: the next call finds the buffer dirty and reconnects
        end = buffer.find(b"\r\n")
        if end < 0:
            return
        reply: bytes | str
        if buffer[0] == 36:  # b"$": a bulk string
            size = int(buffer[1:end])
            start = end + 2
            if size < 0:
                reply, end = b"", start
            else:
                end = start + size + 2
                if len(buffer) < end:
                    return  # more to come
                reply = bytes(buffer[start : end - 2])
        elif buffer[0] == 45:  # b"-": an error
            reply = buffer[1:end].decode("utf-8", "replace")
            end += 2
        else:
            self.fail(redis.exceptions.InvalidResponse(f"unexpected reply {bytes(buffer[:40])!r}"))
            return
        del buffer[:end]
        self.waiter = None
        if not waiter.done():
            waiter.set_result(reply)

    def fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(redis.ConnectionError("Redis closed the connection"))
        self._stream_protocol.connection_lost(exc)


async def _connect_within(connection: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        await connection.connect()


class _Link:
    """One decision connection: redis-py's connection and, while open, its reply reader."""

    __slots__ = ("connection", "replies")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.replies: _Replies | None = None


class AsyncConnections:
    """Connections for async decisions: at most ``limit``; past it, tasks queue for one.

    :meth:`call` runs one command on a free connection: it writes the pre-encoded bytes
    and reads one reply within ``timeout`` seconds (connecting, when needed, within
    ``connect_timeout`` more). A connection that broke is retried up to ``retries``
    times on a fresh socket; one that timed out never is (the script may have run). A
    waiting task gets a connection as soon as another gives one back, or fails with a
    ConnectionError after ``timeout`` seconds. Connections are made like the redis-py
    pool's own (class and options: TLS, passwords, database), without a socket timeout.

    After redis-py's handshake, a connection's replies are read by a small protocol of
    ours (:class:`_Replies`): each call awaits one future, where redis-py's reader would
    run several coroutines and a timeout per read (more client work than the decision's
    whole Redis work, and more objects alive per decision in flight for the garbage
    collector to scan). Deadlines are kept by one watchdog timer per pool, not one timer
    per call: every call has the same timeout, so the calls in flight, in the order they
    started, are also in the order of their deadlines; the watchdog fires at the
    earliest, fails the overdue calls and sleeps until the next deadline.
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
        # No socket timeout: each call has its deadline.
        self._options = {**_decision_options(pool.connection_kwargs), "socket_timeout": None}
        self._limit = limit
        self._timeout = timeout
        self._connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._retries = retries
        self._opened = 0
        self._idle: list[_Link] = []
        self._waiters: deque[asyncio.Future[_Link]] = deque()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        # Reply readers awaiting a reply -> their deadline (loop time), oldest first.
        self._busy: dict[_Replies, float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None

    async def call(self, command: bytes) -> bytes | None:
        """Send ``command`` and return its reply, a RESP bulk string, without its framing.

        Returns None when Redis answers NOSCRIPT (the caller resends with EVAL); raises
        redis-py's exception for any other error reply, redis.TimeoutError when no
        reply came in time, redis.ConnectionError when the connection broke on every try.
        A connection in doubt (timed out, cancelled, broken) is closed.
        """
        idle = self._idle
        link = idle.pop() if idle else await self.take()
        attempt = 0
        try:
            while True:
                replies = link.replies
                try:
                    if replies is None or replies.lost or replies.buffer:
                        replies = await self._connect(link)
                    # No reply can arrive before we await (this task holds the loop).
                    link.connection._writer.write(command)
                    loop = asyncio.get_running_loop()
                    self._busy[replies] = loop.time() + self._timeout
                    if self._watchdog is None or self._watch_loop is not loop:
                        self._watch(loop)
                    reply = await replies.expect(loop)
                except ReplyTimeout:
                    await self._drop(link)
                    raise redis.TimeoutError(
                        f"Timeout: no reply within {self._timeout:g} s"
                    ) from None
                except (OSError, redis.ConnectionError):
                    await self._drop(link)
                    if attempt >= self._retries:
                        raise
                    attempt += 1  # a broken socket (e.g. after a restart): try a fresh one
                    continue
                except BaseException:
                    # Cancelled, or a reply we cannot read: a late reply must never be
                    # read as the next command's.
                    await self._drop(link)
                    raise
                self._busy.pop(replies, None)
                break
        finally:
            self.give(link)
        if type(reply) is str:
            if reply.startswith("NOSCRIPT"):
                return None
            # redis-py's exception for the error code (READONLY, LOADING, BUSY...).
            raise BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
        return reply  # type: ignore[return-value]

    async def _drop(self, link: _Link) -> None:
        """Close a connection in doubt (it reconnects on its next use)."""
        if link.replies is not None:
            self._busy.pop(link.replies, None)
            link.replies = None
        await link.connection.disconnect(nowait=True)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch_loop = loop
        self._watchdog = loop.call_at(
            loop.time() + self._timeout, self._patrol, context=contextvars.Context()
        )

    def _patrol(self) -> None:
        """Fail the calls past their deadline; wake up again at the next deadline."""
        self._watchdog = None
        loop = self._watch_loop
        assert loop is not None
        now = loop.time()
        overdue = []
        for replies, deadline in self._busy.items():
            if deadline > now:
                # In a context of its own, like the first: the caller's would live on.
                self._watchdog = loop.call_at(deadline, self._patrol, context=contextvars.Context())
                break
            overdue.append(replies)
        for replies in overdue:
            del self._busy[replies]
            # A fresh exception each time: a shared one would keep the traceback, and
            # so the frames, of the last call it failed.
            replies.fail(ReplyTimeout())

    async def _connect(self, link: _Link) -> _Replies:
        """(Re)connect with redis-py's handshake, then take the socket's replies over."""
        connection = link.connection
        if connection.is_connected:
            await self._drop(link)  # the server closed it, or it holds unasked-for data
        deadline = self._connect_timeout + self._timeout
        # Connect in a context of its own: the socket's read handle keeps the context it
        # was made in for the connection's whole life (and the timeout's timer handle for
        # a while), and the caller's (a web request's context variables) would keep that
        # request's objects alive as long.
        loop = asyncio.get_running_loop()
        try:
            # (The task is not kept in a local: with its error, that would be a cycle.)
            await loop.create_task(
                _connect_within(connection, deadline), context=contextvars.Context()
            )
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise redis.TimeoutError(f"Timeout: not connected within {deadline:g} s") from None
        transport = connection._writer.transport
        replies = _Replies(transport.get_protocol())
        transport.set_protocol(replies)
        link.replies = replies
        return replies

    async def take(self) -> _Link:
        if self._idle:
            return self._idle.pop()
        if self._opened < self._limit:
            self._opened += 1
            return _Link(self._class(**self._options))
        waiter: asyncio.Future[_Link] = asyncio.get_running_loop().create_future()
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

    def _pass_on(self, waiter: asyncio.Future[_Link]) -> None:
        """A waiter that gives up: a connection handed to it too late goes to the next."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.give(waiter.result())
        else:
            waiter.cancel()

    def give(self, link: _Link) -> None:
        if self._closed:
            # Back from a decision that outlived close(): close it too, never leak it.
            task = asyncio.ensure_future(self._drop(link))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        self._idle.append(link)

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
        for link in idle:
            link.replies = None
            await link.connection.disconnect()


# Pools of connections a forked child must not reuse (their sockets are the parent's).
_FORKABLE: weakref.WeakSet[SyncConnections] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for connections in list(_FORKABLE):
        connections.forget()


os.register_at_fork(after_in_child=_forget_after_fork)
