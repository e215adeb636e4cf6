"""One multiplexed, auto-pipelined connection to one Redis node, for asyncio.

Many calls share one socket. A call appends its encoded command to the connection's write
buffer and a future to its FIFO of reply slots; the buffer is written at the end of each
event-loop turn, so the commands of every task that ran in that turn leave together (the
way ioredis, lettuce and StackExchange.Redis pipeline), in writes of at most a few
commands' wait (:data:`~sergas_guard.redis.wire.FLUSH_EVERY`: Redis starts on the first
while the rest are encoded), and replies, which Redis sends in order, resolve the futures
in order.

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
import threading
from collections.abc import Awaitable, Iterable
from typing import Any

from sergas_guard.redis import fork
from sergas_guard.redis.address import Address, AddressResolver
from sergas_guard.redis.errors import ConnectFailed, ConnectionLost, next_attempt
from sergas_guard.redis.protocol import ErrorReply, encode
from sergas_guard.redis.scripts import Script
from sergas_guard.redis.url import ConnectOptions
from sergas_guard.redis.wire import EMPTY_CONTEXT, NotSent, Wire, discard, open_wire
from sergas_guard.secrets import scrub

__all__ = ["PATIENCE", "AsyncConnection", "NotSent", "handshake_commands", "script_loads"]

_running_loop = asyncio.get_running_loop
_thread_ident = threading.get_ident
# A call with the default deadline waits its turn behind a burst as long as Redis keeps
# replying (each reply within socket_timeout, else the connection is dead), but at most
# PATIENCE x socket_timeout in all: a pipeline's queue is ours, not a sign of an outage.
PATIENCE = 10
# How long closing waits for the socket to be closed before aborting it.
_CLOSE_WAIT = 1.0


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
        self._wire: Wire | None = None
        self._connecting: asyncio.Task[Wire | str] | None = None
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
            # "Is the wire's loop the one running here?" without get_running_loop(), which
            # on Python 3.11 makes a getpid() system call each time (0.2-0.9 µs, a tenth
            # of a decision's client CPU at 500 in flight). An asyncio loop notes the
            # thread it runs in (None when stopped): equal to ours means it is our running
            # loop. A loop without that note takes call(), which asks the exact question.
            or getattr(wire.loop, "_thread_id", None) != _thread_ident()
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

    def _forget_address(self, wire: Wire) -> None:
        self.resolver.invalidate(wire.address)
        wire.kill("the server became a replica (READONLY)")

    async def _connected(self, stale: Wire | None) -> Wire:
        """The open wire, after connecting (or waiting on the connect in progress)."""
        if stale is not None and not stale.closed:
            if stale.loop is _running_loop() and stale.generation == fork.state.generation:
                return stale
            # Another loop's, or the parent's after a fork: never write on it.
            self._wire = None
            if stale.generation == fork.state.generation:
                discard(stale)
        task = self._connecting
        if task is not None and task.get_loop() is not _running_loop():
            task = None  # a connect begun on a loop that has since stopped: start afresh
        starter = task is None
        if task is None:
            loop = asyncio.get_running_loop()
            self._attempt = attempt = next_attempt()
            task = self._connecting = loop.create_task(self._open(loop), context=EMPTY_CONTEXT)
            task.add_done_callback(self._connect_done)
        attempt = self._attempt
        outcome = await asyncio.shield(task)
        if isinstance(outcome, str):
            raise ConnectFailed(outcome, attempt=attempt, is_repeat=not starter)
        if self._closed:
            outcome.kill("the client was closed")
            raise ConnectionLost("the client was closed")
        return outcome

    def _connect_done(self, task: asyncio.Task[Wire | str]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            outcome = task.result()
            if isinstance(outcome, str):
                self.failed_connects += 1
            else:
                self._wire = outcome
                self.connects += 1

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Wire | str:
        """Connect and shake hands within the connect timeout: the wire, or why not
        (a message, not an exception: nothing to keep a traceback alive)."""
        options = self.options
        address: Address | None = None
        wire: Wire | None = None
        try:
            async with asyncio.timeout(options.connect_timeout):
                address = await self.resolver.resolve()
                wire = await open_wire(loop, address, options)
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
            discard(wire)  # another loop's: closed only if that loop has stopped
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
