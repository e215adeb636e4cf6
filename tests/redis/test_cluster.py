"""Our cluster client on a real 3-master Redis Cluster: slots as Redis computes them,
MOVED and ASK followed, a burst on a few connections per node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot as redis_py_key_slot

from sergas_guard.redis import ClusterTarget, Script, TcpAddress, parse_url
from sergas_guard.redis.cluster import (
    AsyncClusterClient,
    SyncClusterClient,
    key_slot,
    redirection,
)
from sergas_guard.redis.protocol import ErrorReply
from tests.servers import RedisCluster

INCR = Script("return redis.call('INCR', KEYS[1])")


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=30) | st.text(max_size=20).map(lambda t: ("{" + t + "}x").encode()))
def test_key_slots_are_the_ones_redis_computes(key: bytes) -> None:
    assert key_slot(key) == redis_py_key_slot(key)


def test_redirections_are_read_from_error_replies() -> None:
    assert redirection(ErrorReply("MOVED 3999 127.0.0.1:6381")) == (
        "MOVED", 3999, TcpAddress("127.0.0.1", 6381)
    )  # fmt: skip
    assert redirection(ErrorReply("ASK 1 ::1:7000")) == ("ASK", 1, TcpAddress("::1", 7000))
    assert redirection(ErrorReply("ERR MOVED 1 h:1 x")) is None
    assert redirection(b"MOVED 1 h:1") is None


@pytest.fixture
def cluster(redis_cluster_session: RedisCluster) -> Iterator[RedisCluster]:
    yield redis_cluster_session
    for host, port in redis_cluster_session.startup_nodes:
        node = redis.Redis(host=host, port=port)
        node.flushall()
        node.close()


def target_of(cluster: RedisCluster) -> ClusterTarget:
    made = parse_url(cluster.url, connect_timeout=5.0, socket_timeout=5.0)
    assert isinstance(made, ClusterTarget)
    return made


def command(admin: redis.Redis, *args: object) -> Any:
    return admin.execute_command(*args)  # type: ignore[no-untyped-call]


def call_of(key: str) -> bytes:
    return INCR.call([key], [])


@pytest.mark.redis
@pytest.mark.cluster
async def test_a_wrong_slot_map_is_corrected_by_moved(cluster: RedisCluster) -> None:
    client = AsyncClusterClient(target_of(cluster))
    first = TcpAddress(*cluster.startup_nodes[0])
    client.slots = [first] * 16384  # as if every slot were on the first node
    keys = [f"{{user{i}}}:n" for i in range(30)]
    replies = await asyncio.gather(
        *(client.run_script(INCR, call_of(k), key_slot(k.encode()), "test") for k in keys)
    )
    assert replies == [1] * 30  # each ran once, on its own node
    assert len({client.slots[key_slot(k.encode())] for k in keys}) == 3  # learnt from MOVED
    assert client.refreshes == 0
    # MOVED also marks the whole map stale: the next call reads it again, once.
    assert (
        await asyncio.gather(
            *(client.run_script(INCR, call_of(k), key_slot(k.encode()), "test") for k in keys)
        )
        == [2] * 30
    )
    assert client.refreshes == 1
    assert None not in client.slots
    await client.aclose()


@pytest.mark.redis
@pytest.mark.cluster
def test_the_sync_face_follows_moved_too(cluster: RedisCluster) -> None:
    client = SyncClusterClient(target_of(cluster))
    client.slots = [TcpAddress(*cluster.startup_nodes[1])] * 16384
    keys = [f"{{user{i}}}:n" for i in range(30)]
    assert [client.run_script(INCR, call_of(k), key_slot(k.encode()), "t") for k in keys] == [
        1
    ] * 30
    client.close()


@pytest.mark.redis
@pytest.mark.cluster
async def test_ask_sends_one_call_to_the_importing_node(cluster: RedisCluster) -> None:
    key = "{migrating}:n"
    slot = key_slot(key.encode())
    admins = [redis.Redis(host=h, port=p) for h, p in cluster.startup_nodes]
    ids = [a.cluster("MYID") for a in admins]
    ranges = command(admins[0], "CLUSTER", "SLOTS")
    port = next(int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
    owner = [p for _, p in cluster.startup_nodes].index(port)
    other = (owner + 1) % 3
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    command(admins[other], "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    command(admins[owner], "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[other])
    try:
        async_client = AsyncClusterClient(target_of(cluster))
        sync_client = SyncClusterClient(target_of(cluster))
        # The key is not on the migrating owner: it answers ASK, the importing node runs it.
        assert await async_client.run_script(INCR, call_of(key), slot, "t") == 1
        assert sync_client.run_script(INCR, call_of(key), slot, "t") == 2
        assert command(admins[other], "CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert async_client.slots[slot] == TcpAddress(*cluster.startup_nodes[owner])  # unchanged
        await async_client.aclose()
        sync_client.close()
    finally:
        for admin in admins:
            command(admin, "CLUSTER", "SETSLOT", slot, "STABLE")
        command(admins[other], "CLUSTER", "SETSLOT", slot, "NODE", ids[owner])
        for admin in admins:
            admin.close()


@pytest.mark.redis
@pytest.mark.cluster
async def test_a_burst_uses_the_fixed_connections_of_each_node(cluster: RedisCluster) -> None:
    client = AsyncClusterClient(target_of(cluster))
    keys = [f"{{burst{i % 50}}}:n" for i in range(1000)]
    replies = await asyncio.gather(
        *(client.run_script(INCR, call_of(k), key_slot(k.encode()), "t") for k in keys)
    )
    assert sum(replies) == sum(range(1, 21)) * 50  # 20 increments on each of 50 keys
    opened = sum(c.connects for node in client.nodes.values() for c in node.connections)
    assert opened <= 3 * client.target.options.connections
    await client.aclose()
