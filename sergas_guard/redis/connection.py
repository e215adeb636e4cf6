"""One multiplexed, auto-pipelined connection to one Redis node, for asyncio.

Many calls share one socket. A call appends its encoded command to the connection's write
buffer and a future to its FIFO of reply slots; the buffer is written once per event-loop
turn, so the commands of every task that ran in that turn leave in one ``write`` (the way
ioredis, lettuce and StackExchange.Redis pipeline), and replies, which Redis sends in
order, resolve the futures in order.

Deadlines: a call given ``within`` seconds gets exactly that; by default a call may wait
its turn in the pipeline up to :data:`PATIENCE` x ``socket_timeout`` while replies keep
coming (queueing behind a burst of our own is not an outage). A single watchdog timer per
connection fires at the earliest deadline and fails the overdue calls with
:class:`~sergas_guard.redis.errors.CallTimeout`.
A timed-out (or cancelled) call's slot stays in the FIFO: its reply, when it comes, is
read and dropped, so replies never shift onto the wrong callers and a slow reply costs
no reconnect. A connection that gets no reply at all for ``socket_timeout`` while calls
wait is dead: every waiting call fails with ConnectionLost, and the next call reconnects.

Connecting: a connect in progress is shared; calls arriving meanwhile wait on that one
attempt, and its failure reaches each as a :class:`~sergas_guard.redis.errors.ConnectFailed`
of the same ``attempt`` (``is_repeat`` for all but the call that started it). The handshake
is ours and pipelined: ``AUTH``, ``SELECT``, ``CLIENT SETNAME`` (each only if configured)
and ``SCRIPT LOAD`` of every script the client registered, in one write. The address comes
from the :class:`~sergas_guard.redis.address.AddressResolver` before each connect and is
reported to it when refused, reset or answering ``READONLY``.

Never retried: a call whose command may have reached the server. The only retry is of
calls still in the write buffer when the connection dropped (certainly not sent); they
go, once, to a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sergas_guard.redis import fork
from sergas_guard.redis.address import Address, AddressResolver, UnixAddress
from sergas_guard.redis.errors import (
    CallTimeout,
    ConnectFailed,
    ConnectionLost,
    next_attempt,
)
from sergas_guard.redis.protocol import ErrorReply, ProtocolError, encode, make_reader
from sergas_guard.redis.scripts import Script
from sergas_guard.redis.url import ConnectOptions
from sergas_guard.secrets import scrub

__all__ = ["AsyncConnection", "NotSent", "handshake_commands", "script_loads"]

# Handles we schedule (flushes, the watchdog, connects) run in an empty context: the
# caller's (a web request's context variables) would otherwise live as long as they do.
_EMPTY = contextvars.Context()
_running_loop = asyncio.get_running_loop
# A connection unused for this long is polled for a close by the server before a write.
_IDLE_CHECK_AFTER = 0.001
# A call with the default deadline waits its turn behind a burst as long as Redis keeps
# replying (each reply within socket_timeout, else the connection is dead), but at most
# PATIENCE x socket_timeout in all: a pipeline's queue is ours, not a sign of an outage.
PATIENCE = 10
# How long closing waits for the socket to be closed before aborting it.
_CLOSE_WAIT = 1.0


class NotSent(Exception):
    """The connection dropped while the command was still in our write buffer: it was
    certainly not sent (internal: :meth:`AsyncConnection.call` resends such a command once;
    a caller of :meth:`AsyncConnection.submit` does so through ``call``)."""


def handshake_commands(options: ConnectOptions) -> list[bytes]:
    """The commands a new connection sends, and awaits, before any call (each replies once).

    Scripts are not among them: their ``SCRIPT LOAD``s (:func:`script_loads`) go at the head
    of the pipeline, their replies dropped, so that compiling them is not counted against
    the connect timeout (a cold burst on a busy host would otherwise fail its connect).
    """
    commands = []
    if options.password is not None:
        if options.username is not None:
            commands.append(encode(b"AUTH", options.username, options.password))
        else:
            commands.append(encode(b"AUTH", options.password))
    if options.db:
        commands.append(encode(b"SELECT", options.db))
    if options.client_name:
        commands.append(encode(b"CLIENT", b"SETNAME", options.client_name))
    return commands


def script_loads(scripts: Iterable[Script]) -> list[bytes]:
    """The ``SCRIPT LOAD`` of each script, sent first on a new connection (replies dropped:
    a failed load only means the first call meets NOSCRIPT and is resent as EVAL)."""
    return [script.load_command for script in scripts]


class _Wire(asyncio.Protocol):
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
        if not futures:
            self.quiet_since = self.loop.time()
        futures.append(future)
        self.deadlines.append(deadline)
        self.out.append(command)
        self.unsent += 1
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush, context=_EMPTY)
        if self.watchdog is None or deadline < self.watch_at:
            self._arm(deadline)
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
        self.watchdog = self.loop.call_at(when, self._patrol, context=_EMPTY)

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


class AsyncConnection:
    """A connection to one node that many tasks share; it (re)connects on demand.

    ``scripts`` is the client's registry: every script in it is loaded by the handshake of
    each new connection. ``secrets`` are scrubbed from every message.
    """

    def __init__(
        self,
        resolver: AddressResolver,
        options: ConnectOptions,
        scripts: dict[str, Script],
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.resolver = resolver
        self.options = options
        self._scripts = scripts
        self._secrets = secrets
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[_Wire | str] | None = None
        self._attempt = 0
        self._closed = False
        self.connects = 0  # successful connects, for tests and metrics
        self.failed_connects = 0  # failed connect attempts (each counted once)

    @property
    def connected(self) -> bool:
        wire = self._wire
        return wire is not None and not wire.closed

    def submit(self, command: bytes) -> Awaitable[Any]:
        """The hot path: ``await connection.submit(command)`` is ``await
        connection.call(command)`` with the default deadline; on an open connection it
        queues the command at once and returns the reply's future (no coroutine), which
        may also fail with NotSent (then resend through :meth:`call`). Await it at once:
        a future kept in a local would, with its exception, make a reference cycle."""
        wire = self._wire
        if (
            wire is None
            or wire.closed
            or wire.generation != fork.state.generation
            or wire.loop is not _running_loop()
        ):
            return self.call(command)
        return wire.send(command, wire.loop.time() + self.options.socket_timeout * PATIENCE)

    def check_reply(self, reply: Any) -> None:
        """After a reply to a :meth:`submit`: READONLY means the server is a replica now."""
        wire = self._wire
        readonly = type(reply) is ErrorReply and reply.code == "READONLY"
        if readonly and wire is not None and not wire.closed:
            self._forget_address(wire)

    async def call(
        self, command: bytes, within: float | None = None, *, after: bytes | None = None
    ) -> Any:
        """Send the encoded ``command``; return its reply (ErrorReply as a value).

        ``after``: a command sent just before ``command`` (e.g. ASKING), its reply dropped.
        Raises ConnectFailed (not connected; not sent), CallTimeout (no reply within
        ``within`` seconds, default PATIENCE x the socket timeout; may have run),
        ConnectionLost (no reply at all for the socket timeout, or the
        connection broke after the command was written; may have run).
        """
        for attempt in (0, 1):
            wire = self._wire
            if (
                wire is None
                or wire.closed
                or wire.loop is not _running_loop()
                or wire.generation != fork.state.generation
            ):
                wire = await self._connected(wire)
            deadline = wire.loop.time() + (within or self.options.socket_timeout * PATIENCE)
            try:
                if after is None:
                    reply = await wire.send(command, deadline)
                else:
                    reply = await wire.send_after(after, command, deadline)
            except NotSent:
                if attempt or self._closed:
                    raise ConnectionLost(wire.lost_reason) from None
                continue  # never written: one try on a fresh connection
            if type(reply) is ErrorReply and reply.code == "READONLY":
                # A replica now (a failover happened): ask the resolver again.
                self._forget_address(wire)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget_address(self, wire: _Wire) -> None:
        self.resolver.invalidate(wire.address)
        wire.kill("the server became a replica (READONLY)")

    async def _connected(self, stale: _Wire | None) -> _Wire:
        """The open wire, after connecting (or waiting on the connect in progress)."""
        if stale is not None and not stale.closed:
            if stale.loop is _running_loop() and stale.generation == fork.state.generation:
                return stale
            # Another loop's, or the parent's after a fork: never write on it.
            self._wire = None
            if stale.generation == fork.state.generation:
                _discard(stale)
        task = self._connecting
        if task is not None and task.get_loop() is not _running_loop():
            task = None  # a connect begun on a loop that has since stopped: start afresh
        starter = task is None
        if task is None:
            loop = asyncio.get_running_loop()
            self._attempt = attempt = next_attempt()
            task = self._connecting = loop.create_task(self._open(loop), context=_EMPTY)
            task.add_done_callback(self._connect_done)
        attempt = self._attempt
        outcome = await asyncio.shield(task)
        if isinstance(outcome, str):
            raise ConnectFailed(outcome, attempt=attempt, is_repeat=not starter)
        if self._closed:
            outcome.kill("the client was closed")
            raise ConnectionLost("the client was closed")
        return outcome

    def _connect_done(self, task: asyncio.Task[_Wire | str]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            outcome = task.result()
            if isinstance(outcome, str):
                self.failed_connects += 1
            else:
                self._wire = outcome
                self.connects += 1

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Wire | str:
        """Connect and shake hands within the connect timeout: the wire, or why not
        (a message, not an exception: nothing to keep a traceback alive)."""
        options = self.options
        address: Address | None = None
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(options.connect_timeout):
                address = await self.resolver.resolve()
                wire = await _open_wire(loop, address, options)
                wire.on_lost = self.resolver.invalidate
                replies = [
                    wire.send(command, float("inf")) for command in handshake_commands(options)
                ]
                for reply in replies:
                    answer = await reply
                    if type(answer) is ErrorReply:
                        wire.kill("handshake refused")
                        return self._why(f"Redis refused the handshake: {answer}", address)
            for load in script_loads(self._scripts.values()):
                wire.send(load, float("inf")).cancel()  # ahead of every call; reply dropped
            return wire
        except TimeoutError:
            if wire is not None:
                wire.kill("handshake timed out")
            return self._why(
                f"Timeout connecting to Redis ({options.connect_timeout:g} s)", address
            )
        except (OSError, ConnectionLost, NotSent) as exc:
            if wire is not None:
                wire.kill("handshake failed")
            if address is not None:
                self.resolver.invalidate(address)
            return self._why(f"cannot connect to Redis: {type(exc).__name__}: {exc}", address)
        except Exception as exc:  # a resolver's own error (e.g. no Sentinel answered)
            return self._why(f"cannot connect to Redis: {exc}", address)

    def _why(self, reason: str, address: Address | None) -> str:
        where = f" at {address}" if address is not None else ""
        return scrub(f"{reason}{where}", *self._secrets)

    async def close(self) -> None:
        """Close the socket; calls still waiting fail with ConnectionLost."""
        self._closed = True
        wire, self._wire = self._wire, None
        if wire is None or wire.closed:
            return
        if wire.generation != fork.state.generation:
            return  # not ours to close: the parent's socket
        if wire.loop is not asyncio.get_running_loop():
            _discard(wire)  # another loop's: closed only if that loop has stopped
            return
        wire._fail_all("the client was closed")
        transport = wire.transport
        if transport is not None:
            transport.close()
            try:
                # Over TLS, closing waits for the server's close_notify: not for long.
                async with asyncio.timeout(_CLOSE_WAIT):
                    await asyncio.shield(wire.gone)
            except TimeoutError:
                transport.abort()
                await asyncio.sleep(0)


def _discard(wire: _Wire) -> None:
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


async def _open_wire(
    loop: asyncio.AbstractEventLoop, address: Address, options: ConnectOptions
) -> _Wire:
    def factory() -> _Wire:
        return _Wire(loop, options.socket_timeout, address)

    wire: _Wire
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
