"""One multiplexed connection for threads: the sync face, with no event loop.

Threads share the socket by *leader/follower*: a thread writes its command (under the
connection's mutex, so the FIFO of reply slots is in the order of the writes) and, if
no thread is reading, becomes the reader; otherwise it sleeps on its slot's own lock.
The reader reads replies off the socket and hands each to its slot's thread in FIFO
order until its own arrives; then it hands the reading to the next waiting thread and
returns. One thread alone pays no thread switch at all (write, read, return), which an
I/O thread serving the others would cost on every call; under many threads, one reader
wakes each waiter directly.

Deadlines and failures follow :mod:`sergas_guard.redis.connection`: a call past its
deadline fails with CallTimeout and its slot stays (the reply is dropped on arrival); no
reply for ``socket_timeout`` while calls wait kills the connection (ConnectionLost for
all); a connect in progress is shared (threads wait on the mutex; its failure reaches
them as ConnectFailed of one ``attempt``). Before writing on a connection idle for a
while, a zero-timeout poll checks that the server has not closed it meanwhile (a
restart): then the command certainly was not sent, and goes to a fresh connection.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from typing import Any

from sergas_guard.redis import fork
from sergas_guard.redis.address import Address, AddressResolver, UnixAddress
from sergas_guard.redis.connection import PATIENCE, handshake_commands, script_loads
from sergas_guard.redis.errors import CallTimeout, ConnectFailed, ConnectionLost, next_attempt
from sergas_guard.redis.protocol import ErrorReply, ProtocolError, Reader, make_reader
from sergas_guard.redis.scripts import Script
from sergas_guard.redis.url import ConnectOptions
from sergas_guard.secrets import scrub

__all__ = ["SyncConnection"]

# A connection unused for this long is polled for a close by the server before a write.
_IDLE_CHECK_AFTER = 0.001
_READ_SIZE = 65536
_monotonic = time.monotonic
_allocate_lock = threading.Lock


class _Slot:
    """One call's place in the FIFO: its reply, or its error, or the reader's role."""

    __slots__ = ("abandoned", "done", "error", "lock", "promoted", "reply")

    def __init__(self) -> None:
        self.reply: Any = None
        self.error: str | None = None
        self.done = False
        self.promoted = False
        self.abandoned = False
        self.lock: threading.Lock | None = None  # made only when the thread must wait


class SyncConnection:
    """A connection to one node that threads share; it (re)connects on demand."""

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
        self._mutex = threading.Lock()
        self._sock: socket.socket | None = None
        self._address: Address | None = None
        self._reader: Reader = make_reader()
        self._slots: deque[_Slot] = deque()
        self._reading = False
        self._generation = fork.state.generation
        self._poller: Any = None
        self._preamble: list[bytes] = []
        self._sock_timeout = 0.0  # the timeout the socket has now
        self._last_used = 0.0
        self._quiet_since = 0.0
        self._attempts = 0  # connect attempts finished (read before waiting for the mutex)
        self._failure: tuple[int, str] | None = None  # the last attempt, if it failed
        self.connects = 0
        self.failed_connects = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._generation == fork.state.generation

    def call(
        self, command: bytes, within: float | None = None, *, after: bytes | None = None
    ) -> Any:
        """Send the encoded ``command``; return its reply (ErrorReply as a value).
        ``after``: a command sent just before it (e.g. ASKING), its reply dropped.
        Raises ConnectFailed, CallTimeout or ConnectionLost as the async face does."""
        timeout = within or self.options.socket_timeout * PATIENCE
        slot = _Slot()
        seen = self._attempts
        with self._mutex:
            now = _monotonic()
            self._ensure_open(now, seen)
            sock = self._sock
            assert sock is not None
            # Commands ahead of this one, their replies dropped: the new connection's
            # script loads, and the caller's ``after``.
            preamble = self._preamble
            dropped = len(preamble) + (after is not None)
            if preamble:
                self._preamble = []
            prefix = b"".join(preamble) + (after or b"")
            try:
                sock.sendall(prefix + command if prefix else command)
            except OSError as exc:
                # Part of it may have gone out: never resent.
                self._kill(f"cannot write to Redis: {type(exc).__name__}: {exc}")
                raise ConnectionLost(self._scrub(f"cannot write to Redis: {exc}")) from None
            slots = self._slots
            if not slots:
                self._quiet_since = now
            for _ in range(dropped):
                ahead = _Slot()
                ahead.abandoned = True  # its reply is read and dropped
                slots.append(ahead)
            slots.append(slot)
            self._last_used = now
            lead = not self._reading
            if lead:
                self._reading = True
            else:
                slot.lock = lock = _allocate_lock()
                lock.acquire()
        deadline = now + timeout
        if not lead and not self._follow(slot, deadline):
            return self._outcome(slot)
        return self._lead(slot, deadline)

    def _outcome(self, slot: _Slot) -> Any:
        if slot.error is not None:
            raise ConnectionLost(slot.error)
        return slot.reply

    def _follow(self, slot: _Slot, deadline: float) -> bool:
        """Wait for the reply or the reader's role; True when promoted to reader."""
        lock = slot.lock
        assert lock is not None
        if lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            return slot.promoted and not slot.done
        with self._mutex:
            if slot.done:
                return False
            if slot.promoted:
                return True  # promoted just now: lead (and give up at once if late)
            slot.abandoned = True
        raise CallTimeout("Timeout: no reply from Redis in time")

    def _lead(self, slot: _Slot, deadline: float) -> Any:
        """Read replies, handing each to its slot, until ``slot``'s own arrives."""
        sock = self._sock
        reader = self._reader
        slots = self._slots
        socket_timeout = self.options.socket_timeout
        while True:
            try:
                reply = reader.gets()
            except ProtocolError as exc:
                self._die(f"unreadable reply from Redis ({exc})")
                return self._outcome(slot)
            if reply is False:
                now = _monotonic()
                silent_until = self._quiet_since + socket_timeout
                if now >= silent_until or sock is None:
                    self._die(f"Timeout: no reply from Redis for {socket_timeout:g} s (closed)")
                    return self._outcome(slot)
                if now >= deadline:
                    self._abdicate(slot)
                    raise CallTimeout("Timeout: no reply from Redis in time")
                wait = min(deadline, silent_until) - now
                try:
                    # Setting a socket's timeout costs two fcntl calls: keep the one it
                    # has while it is within 10 % above the wait (a deadline may then be
                    # kept up to 10 % late), never below it.
                    if not wait <= self._sock_timeout <= wait * 1.1:
                        sock.settimeout(wait)
                        self._sock_timeout = wait
                    data = sock.recv(_READ_SIZE)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self._die(f"Redis connection broke: {type(exc).__name__}: {exc}", lost=True)
                    return self._outcome(slot)
                if not data:
                    self._die("Redis closed the connection", lost=True)
                    return self._outcome(slot)
                self._quiet_since = _monotonic()
                reader.feed(data)
                continue
            owner = slots.popleft()  # only the reader pops: no lock needed
            owner.reply = reply
            owner.done = True
            if owner is slot:
                self._hand_over()
                return reply
            if owner.lock is not None and not owner.abandoned:
                owner.lock.release()

    def _hand_over(self) -> None:
        """Pass the reader's role to the first waiting thread, or to nobody."""
        with self._mutex:
            for waiting in self._slots:
                if not waiting.abandoned:
                    waiting.promoted = True
                    assert waiting.lock is not None
                    waiting.lock.release()
                    return
            self._reading = False

    def _abdicate(self, slot: _Slot) -> None:
        """The reader's own deadline passed: its slot stays, another thread reads on."""
        with self._mutex:
            slot.abandoned = True
        self._hand_over()

    def _die(self, reason: str, *, lost: bool = False) -> None:
        """Kill the connection; ``lost``: the other side closed or reset it, so the
        resolver is told (a Sentinel resolver then looks the master up again)."""
        address = self._address
        with self._mutex:
            self._kill(reason)
        if lost and address is not None:
            self.resolver.invalidate(address)

    def _kill(self, reason: str) -> None:
        """Close the socket and fail every waiting call (under the mutex)."""
        sock, self._sock = self._sock, None
        if sock is not None and self._generation == fork.state.generation:
            sock.close()
        slots, self._slots = self._slots, deque()
        self._reading = False
        self._reader = make_reader()
        message = self._scrub(reason)
        for waiting in slots:
            waiting.error = message
            waiting.done = True
            if waiting.lock is not None and not waiting.abandoned:
                waiting.lock.release()

    # -- connecting ------------------------------------------------------------------

    def _ensure_open(self, now: float, seen: int) -> None:
        """Make sure a usable socket is open (under the mutex); share a failed attempt."""
        if self._generation != fork.state.generation:
            # A forked child: the socket is the parent's; forget it without closing.
            self._sock = None
            self._slots = deque()
            self._reading = False
            self._reader = make_reader()
            self._generation = fork.state.generation
        sock = self._sock
        idle = (
            sock is not None
            and self._poller is not None
            and not self._slots
            and now - self._last_used > _IDLE_CHECK_AFTER
        )
        # Idle, and readable: the server closed it meanwhile (a restart); nothing sent yet.
        if idle and self._poller.poll(0):
            self._kill("Redis closed the idle connection")
            if self._address is not None:
                self.resolver.invalidate(self._address)
            sock = None
        if sock is not None:
            return
        failure = self._failure
        if failure is not None and self._attempts != seen:
            # An attempt finished (failed) after this thread arrived: it waited on that
            # attempt, which is one failure, not one more.
            raise ConnectFailed(failure[1], attempt=failure[0], is_repeat=True)
        attempt = next_attempt()
        try:
            self._connect()
        except _Refused as exc:
            self._failure = (attempt, str(exc))
            self.failed_connects += 1
            raise ConnectFailed(str(exc), attempt=attempt) from None
        finally:
            self._attempts += 1
        self._failure = None
        self.connects += 1

    def _connect(self) -> None:
        options = self.options
        started = _monotonic()
        address: Address | None = None
        sock: socket.socket | None = None
        try:
            address = self.resolver.resolve_sync()
            left = options.connect_timeout - (_monotonic() - started)
            if left <= 0:
                raise TimeoutError
            if isinstance(address, UnixAddress):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(left)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=left)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if options.ssl is not None:
                    sock = options.ssl.wrap_socket(
                        sock, server_hostname=options.server_hostname or address.host
                    )
            reader = make_reader()
            commands = handshake_commands(options)
            if commands:
                sock.settimeout(max(0.001, options.connect_timeout - (_monotonic() - started)))
                sock.sendall(b"".join(commands))
                for _ in commands:
                    answer = _read_one(sock, reader)
                    if type(answer) is ErrorReply:
                        raise _Refused(self._why(f"Redis refused the handshake: {answer}", address))
        except _Refused:
            if sock is not None:
                sock.close()
            raise
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise _Refused(
                self._why(f"Timeout connecting to Redis ({options.connect_timeout:g} s)", address)
            ) from None
        except (OSError, ProtocolError) as exc:
            if sock is not None:
                sock.close()
            if address is not None:
                self.resolver.invalidate(address)
            raise _Refused(
                self._why(f"cannot connect to Redis: {type(exc).__name__}: {exc}", address)
            ) from None
        except Exception as exc:  # a resolver's own error (e.g. no Sentinel answered)
            if sock is not None:
                sock.close()
            raise _Refused(self._why(f"cannot connect to Redis: {exc}", address)) from None
        sock.settimeout(options.socket_timeout)
        self._sock_timeout = options.socket_timeout
        self._sock = sock
        self._address = address
        self._reader = reader
        # Sent with the first call, ahead of it, replies dropped (see script_loads).
        self._preamble = script_loads(self._scripts.values())
        if options.ssl is None:
            # Over TLS the socket may be readable while idle (session tickets): no check.
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            self._poller = poller
        else:
            self._poller = None

    def invalidate_address(self) -> None:
        """The server answered READONLY: ask the resolver again, on a fresh socket."""
        with self._mutex:
            if self._address is not None:
                self.resolver.invalidate(self._address)
            if not self._slots:
                self._kill("the server became a replica (READONLY)")

    def _why(self, reason: str, address: Address | None) -> str:
        where = f" at {address}" if address is not None else ""
        return self._scrub(f"{reason}{where}")

    def _scrub(self, text: str) -> str:
        return scrub(text, *self._secrets)

    def close(self) -> None:
        """Close the socket; calls still waiting fail with ConnectionLost."""
        with self._mutex:
            if self._generation != fork.state.generation:
                self._sock = None  # the parent's: not ours to close
            self._kill("the client was closed")


class _Refused(Exception):
    """A connect attempt failed (its message already scrubbed)."""


def _read_one(sock: socket.socket, reader: Reader) -> object:
    while (reply := reader.gets()) is False:
        data = sock.recv(_READ_SIZE)
        if not data:
            raise ConnectionResetError("Redis closed the connection during the handshake")
        reader.feed(data)
    return reply
