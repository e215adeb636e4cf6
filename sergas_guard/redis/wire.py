"""The protocol on one open socket to Redis: write buffer, FIFO of reply slots, watchdog.

A :class:`Wire` lives as long as its socket. :meth:`Wire.send` appends a command to the
write buffer and a future to the FIFO; the buffer is written at the end of each event-loop
turn, and as soon as it holds :data:`FLUSH_EVERY` commands;
replies, which Redis sends in order, resolve the futures in order. One watchdog timer
fails the calls past their deadline (their slots stay: late replies are read and dropped)
and kills the wire when Redis stays silent for ``socket_timeout`` while calls wait.
:class:`~sergas_guard.redis.connection.AsyncConnection` opens wires and replaces dead ones.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
from collections import deque
from collections.abc import Callable
from typing import Any

from sergas_guard.redis import fork
from sergas_guard.redis.address import Address, UnixAddress
from sergas_guard.redis.errors import CallTimeout, ConnectionLost
from sergas_guard.redis.protocol import ProtocolError, make_reader
from sergas_guard.redis.url import ConnectOptions

__all__ = ["EMPTY_CONTEXT", "FLUSH_EVERY", "NotSent", "Wire", "discard", "open_wire"]

# Handles we schedule (flushes, the watchdog, connects) run in an empty context: the
# caller's (a web request's context variables) would otherwise live as long as they do.
EMPTY_CONTEXT = contextvars.Context()
# A connection unused for this long is polled for a close by the server before a write.
_IDLE_CHECK_AFTER = 0.001
# Commands written at once without waiting for the end of the loop turn. Written only at
# the end, a turn's batch is run by Redis while we wait, then its replies are parsed while
# Redis waits; a write every few commands lets Redis run the first ones while we are still
# encoding the rest. Measured with 50 in flight on one connection: 65k -> 112k decisions/s
# at 16 (32: 99k), p99 1.04 -> 0.63 ms, for ~5 % more client CPU; at 500, no change.
FLUSH_EVERY = 16


class NotSent(Exception):
    """The connection dropped while the command was still in our write buffer: it was
    certainly not sent (internal: :meth:`AsyncConnection.call` resends such a command once;
    a caller of :meth:`AsyncConnection.submit` does so through ``call``)."""


class Wire(asyncio.Protocol):
    """The protocol on one open socket: write buffer, FIFO of reply slots, watchdog."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, socket_timeout: float, address: Address
    ) -> None:
        self.loop = loop
        self.address = address
        self.socket_timeout = socket_timeout
        self.generation = fork.state.generation
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reader = make_reader()
        self.futures: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()
        self.out: list[bytes] = []
        self.unsent = 0  # futures whose commands are still in ``out``
        self.flush_pending = False
        self.quiet_since = 0.0  # last reply, or when the FIFO last became non-empty
        self.watchdog: asyncio.TimerHandle | None = None
        self.watch_at = 0.0
        self.lost_reason = "the connection was closed"
        self.last_reply = 0.0
        self.poller: Any = None
        self.on_lost: Callable[[Address], None] | None = None
        self.gone: asyncio.Future[None] = loop.create_future()  # done: socket closed

    # -- sending ---------------------------------------------------------------------

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Any]:
        """Queue ``command``; the future gets its reply (an ErrorReply is a value)."""
        future = self.loop.create_future()
        futures = self.futures
        watch_at = deadline
        if not futures:
            self.quiet_since = now = self.loop.time()
            # The silence check comes before any default deadline (PATIENCE x longer):
            # a frozen server must fail the calls after socket_timeout, not after that.
            watch_at = min(deadline, now + self.socket_timeout)
        futures.append(future)
        self.deadlines.append(deadline)
        self.out.append(command)
        self.unsent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush, context=EMPTY_CONTEXT)
        if self.watchdog is None or watch_at < self.watch_at:
            self._arm(watch_at)
        if self.unsent >= FLUSH_EVERY:
            self._write_out()  # the rest of the turn's commands still go at its end
        return future

    def send_after(self, prefix: bytes, command: bytes, deadline: float) -> asyncio.Future[Any]:
        """Queue ``prefix`` (e.g. ASKING) and ``command`` back to back, nothing between;
        the prefix's reply is dropped, the future gets the command's."""
        dropped = self.send(prefix, deadline)
        dropped.cancel()  # its reply is read and dropped like a timed-out call's
        return self.send(command, deadline)

    def _flush(self) -> None:
        self.flush_pending = False
        self._write_out()

    def _write_out(self) -> None:
        out = self.out
        if self.closed or not out or self.transport is None:
            return
        if (
            self.poller is not None
            and len(self.futures) == self.unsent
            and self.loop.time() - self.last_reply > _IDLE_CHECK_AFTER
            and self.poller.poll(0)
        ):
            # Idle, yet readable: the server closed it (a restart) and the loop has not
            # read the close yet. Nothing of these calls was sent: they go to a fresh
            # connection rather than fail.
            self.kill("Redis closed the idle connection")
            if self.on_lost is not None:
                self.on_lost(self.address)
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.unsent = 0
        self.transport.write(data)

    # -- receiving -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_reply = self.loop.time()
        if transport.get_extra_info("sslcontext") is None:
            # Over TLS the socket may be readable while idle (session tickets): no check.
            self.poller = select.poll()
            self.poller.register(transport.get_extra_info("socket").fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        futures = self.futures
        deadlines = self.deadlines
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not futures:
                    raise ProtocolError("a reply nobody asked for")
                future = futures.popleft()
                deadlines.popleft()
                if not future.done():  # else timed out or cancelled: dropped
                    future.set_result(reply)
        except ProtocolError as exc:
            self.kill(f"unreadable reply from Redis ({exc})")
            return
        self.quiet_since = self.last_reply = self.loop.time()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set_result(None)
        if not self.closed:
            reason = (
                f"Redis closed the connection ({exc})" if exc else "Redis closed the connection"
            )
            self._fail_all(reason)
            if self.on_lost is not None:
                self.on_lost(self.address)  # closed or reset by the other side

    # -- failing ---------------------------------------------------------------------

    def kill(self, reason: str) -> None:
        """Abort the socket and fail every waiting call (the owner reconnects on next use)."""
        if self.closed:
            return
        self._fail_all(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        self.lost_reason = reason
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        unsent = self.unsent
        self.out.clear()
        self.unsent = 0
        futures, self.futures = self.futures, deque()
        self.deadlines = deque()
        written = len(futures) - unsent
        for index, future in enumerate(futures):
            if not future.done():
                # A fresh exception each: a shared one would keep the last caller's frames.
                future.set_exception(ConnectionLost(reason) if index < written else NotSent(reason))

    # -- the watchdog ------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.watch_at = when
        self.watchdog = self.loop.call_at(when, self._patrol, context=EMPTY_CONTEXT)

    def _patrol(self) -> None:
        """Fail overdue calls; declare the connection dead after ``socket_timeout`` of
        silence with calls waiting; sleep until the next deadline."""
        self.watchdog = None
        if self.closed or not self.futures:
            return
        now = self.loop.time()
        silent_until = self.quiet_since + self.socket_timeout
        earliest = silent_until
        for future, deadline in zip(self.futures, self.deadlines, strict=True):
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(
                    CallTimeout(
                        "Timeout: no reply from Redis in time "
                        f"(socket timeout {self.socket_timeout:g} s)"
                    )
                )
            elif deadline < earliest:
                earliest = deadline
        if now >= silent_until:
            self.kill(f"Timeout: no reply from Redis for {self.socket_timeout:g} s (closed)")
            return
        self._arm(earliest)


def discard(wire: Wire) -> None:
    """Close the socket of a wire whose event loop has been closed (``asyncio.run`` ended
    while it was open): that loop can no longer close its transport, which would warn
    about an unclosed socket when collected. A wire of a loop still running (in another
    thread) is left to that loop."""
    if not wire.loop.is_closed():
        return
    wire.closed = True
    transport = wire.transport
    # The transport's own close needs its loop; its socket is reachable only through its
    # private attribute (the public one is a wrapper without close()).
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        sock.close()
        setattr(transport, "_sock", None)  # noqa: B010 - no warning for a socket closed here


async def open_wire(
    loop: asyncio.AbstractEventLoop, address: Address, options: ConnectOptions
) -> Wire:
    def factory() -> Wire:
        return Wire(loop, options.socket_timeout, address)

    wire: Wire
    if isinstance(address, UnixAddress):
        _, wire = await loop.create_unix_connection(factory, address.path)
    else:
        _, wire = await loop.create_connection(
            factory,
            address.host,
            address.port,
            ssl=options.ssl,
            server_hostname=(options.server_hostname or address.host) if options.ssl else None,
        )
    return wire
