"""Clients over a small, fixed number of multiplexed connections to one server.

:class:`RedisClient` (asyncio) and :class:`SyncRedisClient` (threads) each keep
``options.connections`` connections (default 2) however many calls are in flight: calls
are spread over them in turn and pipelined on each (see :mod:`.connection` and
:mod:`.sync_connection`). Both faces give the same results and raise the same errors:

* :class:`~sergas_guard.errors.StorageUnavailable` when Redis cannot be reached or did not
  answer in time (:class:`~sergas_guard.redis.errors.ConnectFailed`, ``CallTimeout``,
  ``ConnectionLost``) or answered that it cannot serve now (READONLY, LOADING...);
* :class:`~sergas_guard.errors.StorageError` for any other error reply.

The one retry rule: a command is sent again only when it certainly was not sent (it was
still in our buffer when the connection dropped), or when a script answered NOSCRIPT
(it did not run); never after a timeout or a write that may have reached the server.
Fork-safe: a child opens its own sockets, never writes on the parent's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sergas_guard.redis.address import AddressResolver, FixedAddress
from sergas_guard.redis.connection import AsyncConnection
from sergas_guard.redis.errors import from_error_reply
from sergas_guard.redis.protocol import ErrorReply, encode
from sergas_guard.redis.scripts import Script
from sergas_guard.redis.sentinel import SentinelResolver
from sergas_guard.redis.sync_connection import SyncConnection
from sergas_guard.redis.url import ConnectOptions, SentinelTarget, SingleTarget

__all__ = ["RedisClient", "SyncRedisClient", "client_target"]

Arg = bytes | str | int | float


class _Base:
    def __init__(
        self,
        target: SingleTarget,
        *,
        resolver: AddressResolver | None = None,
        secrets: tuple[str, ...] = (),
        scripts: dict[str, Script] | None = None,
    ) -> None:
        self.target = target
        self.options: ConnectOptions = target.options
        self.resolver = resolver or FixedAddress(target.address)
        self.secrets = secrets
        # Shared with every connection (and, on a cluster, every node's client): a new
        # connection loads these in its handshake.
        self.scripts: dict[str, Script] = {} if scripts is None else scripts

    def register(self, script: Script) -> None:
        """Load ``script`` on every connection opened from now on (done on first use)."""
        self.scripts.setdefault(script.sha, script)

    def _check(self, reply: Any, doing: str) -> Any:
        if type(reply) is ErrorReply:
            raise from_error_reply(reply, doing, self.secrets)
        return reply

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resolver!r}, connections={self.options.connections})"


class RedisClient(_Base):
    """The asyncio client: ``await client.call("GET", "k")``, ``await client.evalsha(...)``."""

    def __init__(
        self,
        target: SingleTarget,
        *,
        resolver: AddressResolver | None = None,
        secrets: tuple[str, ...] = (),
        scripts: dict[str, Script] | None = None,
    ) -> None:
        super().__init__(target, resolver=resolver, secrets=secrets, scripts=scripts)
        self.connections = [
            AsyncConnection(self.resolver, self.options, self.scripts, secrets)
            for _ in range(self.options.connections)
        ]
        self._next = itertools.cycle(self.connections).__next__

    async def call(self, *args: Arg, within: float | None = None) -> Any:
        """Run one command; its reply (bytes, int, None or a list).
        Raises StorageUnavailable / StorageError as the module says."""
        return self._check(await self._next().call(encode(*args), within), "command")

    async def execute(self, command: bytes, within: float | None = None) -> Any:
        """Run one pre-encoded command; its reply, an error reply as ErrorReply (a value).
        Raises StorageUnavailable when Redis cannot be reached or did not answer."""
        return await self._next().call(command, within)

    async def evalsha(
        self,
        script: Script,
        keys: Sequence[bytes | str],
        args: Sequence[Arg],
        within: float | None = None,
    ) -> Any:
        """Run ``script`` by its SHA-1 (loading it if the server lost it); its reply.
        Raises StorageUnavailable / StorageError as the module says."""
        return await self.run_script(script, script.call(list(keys), list(args)), within)

    async def run_script(
        self, script: Script, call: bytes, within: float | None = None, doing: str = "script"
    ) -> Any:
        """Run a pre-encoded EVALSHA ``call`` of ``script``: on NOSCRIPT, once as EVAL on
        the same connection. Raises StorageUnavailable / StorageError."""
        if script.sha not in self.scripts:
            self.register(script)
        connection = self._next()
        reply = await connection.call(call, within)
        if type(reply) is ErrorReply:
            return await self.settle(script, call, reply, doing, connection)
        return reply

    def pick(self) -> AsyncConnection:
        """The connection the next call goes to (they take turns). For hot paths:
        ``await connection.submit(command)`` runs a pre-encoded command on it; an
        ErrorReply to a script call goes to :meth:`settle`."""
        return self._next()

    async def settle(
        self,
        script: Script,
        call: bytes,
        reply: ErrorReply,
        doing: str,
        connection: AsyncConnection,
    ) -> Any:
        """What an error ``reply`` to a ``call`` of ``script`` comes to: after NOSCRIPT,
        the reply of the call resent as EVAL on ``connection`` (it had not run); else
        raises its error (StorageUnavailable for READONLY and the like, StorageError
        otherwise)."""
        if reply.code == "NOSCRIPT":
            retried = await connection.call(script.as_eval(call))
            if type(retried) is not ErrorReply:
                return retried
            reply = retried
        connection.check_reply(reply)
        raise from_error_reply(reply, doing, self.secrets)

    @property
    def open_connections(self) -> int:
        return sum(connection.connected for connection in self.connections)

    async def aclose(self) -> None:
        """Close every connection (calls in flight fail with ConnectionLost)."""
        for connection in self.connections:
            await connection.close()


class SyncRedisClient(_Base):
    """The client for threads, the sync twin of :class:`RedisClient` (no event loop)."""

    def __init__(
        self,
        target: SingleTarget,
        *,
        resolver: AddressResolver | None = None,
        secrets: tuple[str, ...] = (),
        scripts: dict[str, Script] | None = None,
    ) -> None:
        super().__init__(target, resolver=resolver, secrets=secrets, scripts=scripts)
        self.connections = [
            SyncConnection(self.resolver, self.options, self.scripts, secrets)
            for _ in range(self.options.connections)
        ]
        self._next = itertools.cycle(self.connections).__next__

    def call(self, *args: Arg, within: float | None = None) -> Any:
        """Run one command; its reply. Raises StorageUnavailable / StorageError."""
        return self._check(self._next().call(encode(*args), within), "command")

    def execute(self, command: bytes, within: float | None = None) -> Any:
        """Run one pre-encoded command; its reply (an error reply as ErrorReply)."""
        return self._next().call(command, within)

    def evalsha(
        self,
        script: Script,
        keys: Sequence[bytes | str],
        args: Sequence[Arg],
        within: float | None = None,
    ) -> Any:
        """Run ``script`` by its SHA-1 (loading it if the server lost it); its reply."""
        return self.run_script(script, script.call(list(keys), list(args)), within)

    def run_script(
        self, script: Script, call: bytes, within: float | None = None, doing: str = "script"
    ) -> Any:
        """Sync twin of :meth:`RedisClient.run_script`."""
        if script.sha not in self.scripts:
            self.register(script)
        connection = self._next()
        reply = connection.call(call, within)
        if type(reply) is ErrorReply:
            if reply.code == "NOSCRIPT":
                reply = connection.call(script.as_eval(call), within)
                if type(reply) is not ErrorReply:
                    return reply
            if reply.code == "READONLY":
                connection.invalidate_address()
            raise from_error_reply(reply, doing, self.secrets)
        return reply

    @property
    def open_connections(self) -> int:
        return sum(connection.connected for connection in self.connections)

    def close(self) -> None:
        """Close every connection."""
        for connection in self.connections:
            connection.close()


def client_target(target: SingleTarget | SentinelTarget) -> tuple[SingleTarget, AddressResolver]:
    """The target a client connects to and the resolver that finds its address: a
    fixed one for a single server, a :class:`SentinelResolver` asking the Sentinels for
    the master of ``service`` on every (re)connect otherwise."""
    if isinstance(target, SingleTarget):
        return target, FixedAddress(target.address)
    resolver: AddressResolver = SentinelResolver(
        target.sentinels,
        target.service,
        username=target.sentinel_username,
        password=target.sentinel_password,
        master_username=target.options.username,
        master_password=target.options.password,
        connect_timeout=target.options.connect_timeout,
        ssl=target.options.ssl,
    )
    # The address is a placeholder: every connect asks the resolver.
    return SingleTarget(target.sentinels[0], target.options), resolver
