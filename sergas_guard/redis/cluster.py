"""Redis Cluster on the same multiplexed connections: one small client per node.

Each key has a slot (CRC16 of the key, or of its ``{hash tag}``, modulo 16384); the
client keeps a map slot -> primary, learnt from ``CLUSTER SLOTS`` of any node it knows,
and sends each call to its slot's node over that node's multiplexed connections (a
:class:`~sergas_guard.redis.client.RedisClient` / ``SyncRedisClient`` per node).

Redirections (:func:`redirection`, one pure rule for both faces): ``MOVED slot host:port``
means the slot lives elsewhere for good: the map learns it (and is read again in full
soon), and the call goes there; ``ASK host:port`` means this one call goes there after
``ASKING`` (a slot being migrated), the map unchanged. Both say the command did not run,
so resending it is safe; at most :data:`MAX_REDIRECTIONS` times.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sergas_guard.errors import StorageUnavailable
from sergas_guard.redis.address import TcpAddress
from sergas_guard.redis.client import RedisClient, SyncRedisClient
from sergas_guard.redis.connection import AsyncConnection, NotSent
from sergas_guard.redis.errors import from_error_reply
from sergas_guard.redis.protocol import ErrorReply, encode
from sergas_guard.redis.scripts import Script
from sergas_guard.redis.url import ClusterTarget, SingleTarget

__all__ = [
    "MAX_REDIRECTIONS",
    "SLOTS",
    "AsyncClusterClient",
    "SyncClusterClient",
    "key_slot",
    "redirection",
]

SLOTS = 16384
MAX_REDIRECTIONS = 5
_ASKING = encode(b"ASKING")
_CLUSTER_SLOTS = encode(b"CLUSTER", b"SLOTS")


def _crc16_table() -> list[int]:
    # CRC-16/XMODEM (polynomial 0x1021), the checksum Redis Cluster hashes keys with.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def key_slot(key: bytes) -> int:
    """The cluster slot of ``key``: of its ``{hash tag}`` when it has a non-empty one."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    table = _TABLE
    for byte in key:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc % SLOTS


def redirection(reply: object) -> tuple[str, int, TcpAddress] | None:
    """``("MOVED"|"ASK", slot, address)`` when ``reply`` redirects the call, else None."""
    if type(reply) is not ErrorReply:
        return None
    words = str(reply).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = words[2].rpartition(":")
    return words[0], int(words[1]), TcpAddress(host.strip("[]"), int(port))


def slot_map(reply: object) -> dict[int, TcpAddress]:
    """``CLUSTER SLOTS`` as {first slot of a range: primary}, expanded by the caller."""
    ranges: dict[int, TcpAddress] = {}
    if not isinstance(reply, list):
        raise StorageUnavailable(f"unexpected CLUSTER SLOTS reply: {reply!r:.100}")
    for entry in reply:
        first, last, primary = entry[0], entry[1], entry[2]
        address = TcpAddress(primary[0].decode(), int(primary[1]))
        for slot in range(first, last + 1):
            ranges[slot] = address
    return ranges


class _ClusterBase:
    def __init__(self, target: ClusterTarget, secrets: tuple[str, ...] = ()) -> None:
        self.target = target
        self.secrets = secrets
        self.scripts: dict[str, Script] = {}
        self.slots: list[TcpAddress | None] = [None] * SLOTS
        # Read the whole map again before the next call: a node failed (a failover may
        # have moved its slots) or answered MOVED (a resharding moves many slots).
        self.stale = False
        self.refreshes = 0  # slot map reads, for tests and metrics

    def register(self, script: Script) -> None:
        """Load ``script`` on every node connection opened from now on."""
        self.scripts.setdefault(script.sha, script)

    def _known(self) -> list[TcpAddress]:
        """Nodes to ask for the slot map: those in the map first, then the URL's."""
        seen = dict.fromkeys(a for a in self.slots if a is not None)
        seen.update(dict.fromkeys(self.target.nodes))
        return list(seen)

    def _learn(self, reply: object) -> None:
        for slot, address in slot_map(reply).items():
            self.slots[slot] = address
        self.stale = False
        self.refreshes += 1

    def _unmapped(self, slot: int) -> StorageUnavailable:
        return StorageUnavailable(f"no Redis Cluster node serves slot {slot} (cluster down?)")

    def _no_slot_map(self, errors: list[str]) -> StorageUnavailable:
        return StorageUnavailable(
            "no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors[-3:])
        )


class AsyncClusterClient(_ClusterBase):
    """The asyncio client of a Redis Cluster (see the module)."""

    def __init__(self, target: ClusterTarget, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(target, secrets)
        self.nodes: dict[TcpAddress, RedisClient] = {}
        self._refreshing: asyncio.Future[None] | None = None

    def node(self, address: TcpAddress) -> RedisClient:
        client = self.nodes.get(address)
        if client is None:
            client = RedisClient(
                SingleTarget(address, self.target.options),
                secrets=self.secrets,
                scripts=self.scripts,  # shared: every node loads the registered ones
            )
            self.nodes[address] = client
        return client

    def pick(self, slot: int) -> AsyncConnection | None:
        """The connection for ``slot``'s next call, or None before the slot map is known."""
        address = self.slots[slot]
        return None if address is None else self.node(address).pick()

    async def refresh(self) -> None:
        """Read the slot map from any known node (one read shared by concurrent callers).
        Raises StorageUnavailable when no node answers."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        done = self._refreshing = asyncio.get_running_loop().create_future()
        try:
            errors = []
            for address in self._known():
                try:
                    reply = await self.node(address).call("CLUSTER", "SLOTS")
                except StorageUnavailable as exc:
                    errors.append(str(exc))
                    continue
                self._learn(reply)
                return
            raise self._no_slot_map(errors)
        finally:
            self._refreshing = None
            done.set_result(None)

    async def run_script(self, script: Script, call: bytes, slot: int, doing: str) -> Any:
        """Run a pre-encoded EVALSHA ``call`` of ``script`` on ``slot``'s node, following
        redirections. Raises StorageUnavailable / StorageError."""
        if script.sha not in self.scripts:
            self.register(script)
        connection = self.pick(slot)
        if connection is None or self.stale:
            await self.refresh()
            connection = self.pick(slot)
            if connection is None:
                raise self._unmapped(slot)
        try:
            try:
                reply = await connection.submit(call)
            except NotSent:
                reply = await connection.call(call)
        except StorageUnavailable:
            self.stale = True  # the node may be gone: ask the cluster again next time
            raise
        if type(reply) is ErrorReply:
            return await self.settle(script, call, slot, reply, doing)
        return reply

    async def settle(
        self, script: Script, call: bytes, slot: int, reply: ErrorReply, doing: str
    ) -> Any:
        """Follow redirections and NOSCRIPT for an error ``reply``; raise any other."""
        for _ in range(MAX_REDIRECTIONS):
            redirect = redirection(reply)
            if redirect is not None:
                kind, moved_slot, address = redirect
                connection = self.node(address).pick()
                if kind == "MOVED":
                    self.slots[moved_slot] = address
                    self.stale = True
                    answer = await connection.call(call)
                else:  # ASK: this call only, right after ASKING on the same connection
                    answer = await connection.call(call, after=_ASKING)
            elif reply.code == "NOSCRIPT":
                connection = self.pick(slot) or self.node(self.target.nodes[0]).pick()
                answer = await connection.call(script.as_eval(call))
            else:
                raise from_error_reply(reply, doing, self.secrets)
            if type(answer) is not ErrorReply:
                return answer
            reply = answer
        raise StorageUnavailable(f"Redis Cluster redirected a {doing} too many times: {reply}")

    async def aclose(self) -> None:
        for client in self.nodes.values():
            await client.aclose()
        self.nodes.clear()


class SyncClusterClient(_ClusterBase):
    """The client for threads of a Redis Cluster, the twin of :class:`AsyncClusterClient`."""

    def __init__(self, target: ClusterTarget, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(target, secrets)
        self.nodes: dict[TcpAddress, SyncRedisClient] = {}
        self._lock = threading.Lock()

    def node(self, address: TcpAddress) -> SyncRedisClient:
        client = self.nodes.get(address)
        if client is None:
            with self._lock:
                client = self.nodes.get(address)
                if client is None:
                    client = SyncRedisClient(
                        SingleTarget(address, self.target.options),
                        secrets=self.secrets,
                        scripts=self.scripts,
                    )
                    self.nodes[address] = client
        return client

    def refresh(self) -> None:
        """Read the slot map from any known node. Raises StorageUnavailable."""
        errors = []
        for address in self._known():
            try:
                reply = self.node(address).call("CLUSTER", "SLOTS")
            except StorageUnavailable as exc:
                errors.append(str(exc))
                continue
            self._learn(reply)
            return
        raise self._no_slot_map(errors)

    def run_script(self, script: Script, call: bytes, slot: int, doing: str) -> Any:
        """Sync twin of :meth:`AsyncClusterClient.run_script`."""
        if script.sha not in self.scripts:
            self.register(script)
        address = self.slots[slot]
        if address is None or self.stale:
            self.refresh()
            address = self.slots[slot]
            if address is None:
                raise self._unmapped(slot)
        try:
            reply = self.node(address).execute(call)
        except StorageUnavailable:
            self.stale = True  # the node may be gone: ask the cluster again next time
            raise
        for _ in range(MAX_REDIRECTIONS):
            if type(reply) is not ErrorReply:
                return reply
            redirect = redirection(reply)
            if redirect is not None:
                kind, moved_slot, address = redirect
                if kind == "MOVED":
                    self.slots[moved_slot] = address
                    self.stale = True
                    reply = self.node(address).execute(call)
                else:  # ASK: this call only, right after ASKING on the same connection
                    reply = self.node(address).connections[0].call(call, after=_ASKING)
            elif reply.code == "NOSCRIPT":
                reply = self.node(address).execute(script.as_eval(call))
            else:
                raise from_error_reply(reply, doing, self.secrets)
        if type(reply) is not ErrorReply:
            return reply
        raise StorageUnavailable(f"Redis Cluster redirected a {doing} too many times: {reply}")

    def close(self) -> None:
        for client in self.nodes.values():
            client.close()
        self.nodes.clear()
