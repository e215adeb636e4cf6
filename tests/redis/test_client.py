"""The multiplexed clients against a real redis-server: replies always reach their own
callers, deadlines hold without reconnects, a dead connection is noticed, connects are
shared, scripts come back after SCRIPT FLUSH, and threads share sockets too."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import StorageError, StorageUnavailable
from sergas_guard.redis import (
    Address,
    CallTimeout,
    ConnectFailed,
    FixedAddress,
    RedisClient,
    Script,
    SingleTarget,
    SyncRedisClient,
    parse_url,
)
from sergas_guard.redis.connection import AsyncConnection
from sergas_guard.redis.protocol import encode
from sergas_guard.redis.wire import Wire
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.redis

INCR = Script("return redis.call('INCR', KEYS[1])")
# A script that keeps the server busy for a moment (about a millisecond), then echoes.
SPIN = "local i = 0 while i < 100000 do i = i + 1 end return ARGV[1]"


def target(url: str, **options: float) -> SingleTarget:
    made = parse_url(url, **options)  # type: ignore[arg-type]
    assert isinstance(made, SingleTarget)
    return made


def clients_of(url: str) -> int:
    admin = redis.Redis.from_url(url)
    try:
        return len(admin.client_list()) - 1  # not counting itself
    finally:
        admin.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    made = RedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    yield made
    await made.aclose()


@pytest.fixture
def sync_client(redis_url: str) -> Iterator[SyncRedisClient]:
    made = SyncRedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    yield made
    made.close()


# -- pipelining ------------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from([None, 0.0005, 0.002, 0.5]),  # per-call deadline (None: default)
            st.integers(0, 3),  # loop turns to yield before calling: interleavings
            st.booleans(),  # a slow command (a short server-side sleep) or an echo
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_every_reply_reaches_its_own_caller_whatever_the_deadlines(
    redis_url: str, calls: list[tuple[float | None, int, bool]]
) -> None:
    client = RedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))

    async def one(index: int, within: float | None, turns: int, slow: bool) -> tuple[bytes, object]:
        for _ in range(turns):
            await asyncio.sleep(0)
        token = f"call-{index}".encode()
        command = ("EVAL", SPIN, 0, token) if slow else ("ECHO", token)
        try:
            return (token, await client.call(*command, within=within))
        except CallTimeout:
            return (token, "timeout")

    try:
        outcomes = await asyncio.gather(*(one(i, *call) for i, call in enumerate(calls)))
        for token, reply in outcomes:
            assert reply in (token, "timeout")  # its own reply or a timeout, never another's
        # Late replies of timed-out calls were dropped, not handed to the next callers.
        assert await client.call("ECHO", b"after") == b"after"
    finally:
        await client.aclose()


async def test_a_burst_of_1000_calls_uses_the_fixed_connections(
    client: RedisClient, redis_url: str
) -> None:
    before = clients_of(redis_url)
    results = await asyncio.gather(*(client.evalsha(INCR, ["burst"], []) for _ in range(1000)))
    assert sorted(results) == list(range(1, 1001))
    assert clients_of(redis_url) - before == client.options.connections
    assert sum(c.connects for c in client.connections) == client.options.connections


async def test_an_error_reply_fails_only_its_own_call(client: RedisClient) -> None:
    outcomes = await asyncio.gather(
        client.call("ECHO", b"a"), client.call("NOSUCHCOMMAND"), client.call("ECHO", b"b"),
        return_exceptions=True,
    )  # fmt: skip
    assert outcomes[0] == b"a"
    assert outcomes[2] == b"b"
    assert isinstance(outcomes[1], StorageError)
    assert not isinstance(outcomes[1], StorageUnavailable)


# -- deadlines and dead connections ---------------------------------------------------


async def test_a_stalled_server_times_out_a_call_without_misaligning_or_reconnecting(
    own_redis: RedisServer,
) -> None:
    client = RedisClient(target(own_redis.url, connect_timeout=2.0, socket_timeout=3.0))
    connection = client.connections[0]
    assert await connection.call(encode("SET", "k", "before")) == b"OK"
    own_redis.pause()
    try:
        with pytest.raises(CallTimeout):
            await connection.call(encode("GET", "k"), within=0.2)
    finally:
        own_redis.resume()
    # The late reply ("before") is dropped; the next call gets its own.
    assert await connection.call(encode("ECHO", "new")) == b"new"
    assert connection.connects == 1  # the same socket all along
    await client.aclose()


async def test_a_connection_silent_for_the_socket_timeout_is_replaced(
    own_redis: RedisServer,
) -> None:
    client = RedisClient(target(own_redis.url, connect_timeout=2.0, socket_timeout=0.3))
    connection = client.connections[0]
    assert await connection.call(encode("PING")) == b"PONG"
    own_redis.pause()
    try:
        outcomes = await asyncio.gather(
            *(connection.call(encode("PING")) for _ in range(5)),
            return_exceptions=True,
        )
    finally:
        own_redis.resume()
    assert all(isinstance(o, StorageUnavailable) for o in outcomes)
    assert not connection.connected  # declared dead
    assert await connection.call(encode("ECHO", "back")) == b"back"
    assert connection.connects == 2
    await client.aclose()


async def test_a_restarted_server_costs_no_failed_call(own_redis: RedisServer) -> None:
    client = RedisClient(target(own_redis.url, connect_timeout=2.0, socket_timeout=2.0))
    sync = SyncRedisClient(target(own_redis.url, connect_timeout=2.0, socket_timeout=2.0))
    assert await client.evalsha(INCR, ["r"], []) == 1
    assert sync.evalsha(INCR, ["r"], []) == 2
    own_redis.stop()
    own_redis.start()
    await asyncio.sleep(0.01)
    # The old sockets are closed by the server; nothing was sent on them: fresh ones.
    assert await client.evalsha(INCR, ["r"], []) == 1
    assert sync.evalsha(INCR, ["r"], []) == 2
    sync.close()
    await client.aclose()


# -- connecting -----------------------------------------------------------------------


async def test_a_connect_in_progress_is_one_attempt_for_every_waiting_call() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: refused at once
    client = RedisClient(target(url, connect_timeout=1.0, socket_timeout=1.0, connections=1))
    outcomes = await asyncio.gather(
        *(client.call("PING") for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(o, ConnectFailed) for o in outcomes)
    failures = [o for o in outcomes if isinstance(o, ConnectFailed)]
    assert len({f.attempt for f in failures}) == 1
    assert sum(not f.is_repeat for f in failures) == 1  # counted once by a failure counter
    assert client.connections[0].failed_connects == 1
    await client.aclose()


def test_threads_waiting_on_a_failed_connect_share_its_failure(own_redis: RedisServer) -> None:
    # A frozen server accepts the connection (the kernel does) but never answers the
    # handshake's SELECT: the connect times out after 0.5 s, while all threads wait.
    url = own_redis.url.rsplit("/", 1)[0] + "/1"
    client = SyncRedisClient(target(url, connect_timeout=0.5, socket_timeout=1.0, connections=1))
    outcomes: list[ConnectFailed] = []
    barrier = threading.Barrier(20)

    def one() -> None:
        barrier.wait()
        try:
            client.call("PING")
        except ConnectFailed as exc:
            outcomes.append(exc)

    own_redis.pause()
    try:
        threads = [threading.Thread(target=one) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        own_redis.resume()
    assert len(outcomes) == 20
    assert len({o.attempt for o in outcomes}) == 1
    assert sum(not o.is_repeat for o in outcomes) == 1
    assert client.connections[0].failed_connects == 1
    assert client.call("PING") == b"PONG"  # the next call tries again, and connects
    client.close()


# -- scripts --------------------------------------------------------------------------


async def test_scripts_come_back_after_script_flush(redis_url: str) -> None:
    # One connection each, so that both meet the flushed cache (not a fresh handshake).
    one = {"connect_timeout": 2.0, "socket_timeout": 2.0, "connections": 1}
    client = RedisClient(target(redis_url, **one))
    sync = SyncRedisClient(target(redis_url, **one))
    assert await client.evalsha(INCR, ["s"], []) == 1
    assert sync.evalsha(INCR, ["s"], []) == 2
    admin = redis.Redis.from_url(redis_url)
    admin.config_resetstat()
    for n, face in enumerate((client.evalsha, sync.evalsha), start=1):
        admin.script_flush()
        reply = face(INCR, ["s"], [])
        assert (await reply if asyncio.iscoroutine(reply) else reply) == 2 + n
        assert admin.info("commandstats")["cmdstat_eval"]["calls"] == n  # resent once
    # A connection opened now loads the registered script in its handshake.
    fresh = RedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    fresh.register(INCR)
    admin.script_flush()
    await fresh.call("PING")
    assert admin.script_exists(INCR.sha) == [True]
    admin.close()
    sync.close()
    await fresh.aclose()
    await client.aclose()


async def test_a_script_error_is_a_storage_error(client: RedisClient) -> None:
    with pytest.raises(StorageError, match="boom"):
        await client.evalsha(Script("return redis.error_reply('boom')"), [], [])


# -- the sync face --------------------------------------------------------------------


def test_many_threads_share_the_fixed_connections(
    sync_client: SyncRedisClient, redis_url: str
) -> None:
    before = clients_of(redis_url)
    seen: list[int] = []

    def work() -> None:
        for _ in range(100):
            seen.append(sync_client.evalsha(INCR, ["threads"], []))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 1601))  # every reply to its own caller, once
    assert clients_of(redis_url) - before == sync_client.options.connections


def test_threads_with_short_deadlines_on_a_stalled_server_stay_aligned(
    own_redis: RedisServer,
) -> None:
    client = SyncRedisClient(
        target(own_redis.url, connect_timeout=2.0, socket_timeout=3.0, connections=1)
    )
    assert client.call("PING") == b"PONG"
    outcomes: dict[int, object] = {}

    def one(index: int) -> None:
        try:
            outcomes[index] = client.call("ECHO", b"%d" % index, within=0.2)
        except CallTimeout:
            outcomes[index] = "timeout"

    own_redis.pause()
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        own_redis.resume()
    assert set(outcomes.values()) == {"timeout"}
    assert client.call("ECHO", b"mine") == b"mine"  # the 8 late replies were dropped
    assert client.connections[0].connects == 1
    client.close()


# -- the address resolver -------------------------------------------------------------


class RecordingResolver(FixedAddress):
    """A fixed address that notes every ``invalidate`` (what a Sentinel resolver acts on)."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.invalidated: list[Address] = []

    def invalidate(self, address: Address) -> None:
        self.invalidated.append(address)


def kill_clients(url: str) -> None:
    admin = redis.Redis.from_url(url)
    admin.client_kill_filter(skipme=True)
    admin.close()


async def test_the_resolver_hears_of_a_connection_the_server_closed(
    own_redis: RedisServer,
) -> None:
    made = target(own_redis.url, connect_timeout=2.0, socket_timeout=2.0, connections=1)
    resolver = RecordingResolver(made.address)
    client = RedisClient(made, resolver=resolver)
    sync = SyncRedisClient(made, resolver=resolver)
    assert await client.call("PING") == b"PONG"
    assert sync.call("PING") == b"PONG"
    kill_clients(own_redis.url)  # CLIENT KILL: both sockets closed by the server
    await asyncio.sleep(0.05)  # the loop reads the close
    assert sync.call("PING") == b"PONG"  # a fresh socket: the old one was polled first
    assert await client.call("PING") == b"PONG"
    assert resolver.invalidated == [made.address, made.address]
    sync.close()
    await client.aclose()


async def test_readonly_tells_the_resolver_and_is_unavailable(own_redis: RedisServer) -> None:
    made = target(own_redis.url, connect_timeout=2.0, socket_timeout=2.0, connections=1)
    resolver = RecordingResolver(made.address)
    client = RedisClient(made, resolver=resolver)
    sync = SyncRedisClient(made, resolver=resolver)
    assert await client.evalsha(INCR, ["ro"], []) == 1
    admin = redis.Redis.from_url(own_redis.url)
    admin.replicaof("127.0.0.1", free_port())  # a replica now (of nobody that answers)
    try:
        with pytest.raises(StorageUnavailable, match="READONLY"):
            await client.evalsha(INCR, ["ro"], [])
        with pytest.raises(StorageUnavailable, match="READONLY"):
            sync.evalsha(INCR, ["ro"], [])
    finally:
        admin.replicaof("NO", "ONE")
    assert resolver.invalidated == [made.address, made.address]
    # The connection that met READONLY was dropped; the next call reconnects (a Sentinel
    # resolver would give the new master's address here).
    assert await client.evalsha(INCR, ["ro"], []) == 2
    assert client.connections[0].connects == 2
    admin.close()
    sync.close()
    await client.aclose()


def test_a_client_used_from_successive_event_loops_leaks_no_socket(redis_url: str) -> None:
    # asyncio.run() closes its loop with our socket open; the next loop opens its own and
    # closes the stale one (collected unclosed, it would warn: an error in this suite).
    client = RedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    before = clients_of(redis_url)
    assert asyncio.run(client.call("ECHO", b"one")) == b"one"
    assert asyncio.run(client.call("ECHO", b"two")) == b"two"
    assert client.connections[0].connects == 2
    assert clients_of(redis_url) - before == 1  # the first loop's socket was closed
    asyncio.run(client.aclose())
    gc.collect()


def _child_uses_the_inherited_clients(client: RedisClient, sync: SyncRedisClient) -> None:
    # Both clients' connections are the parent's: the child must open its own.
    ok = asyncio.run(client.call("INCR", "forked")) == 2 and sync.call("INCR", "forked") == 3
    os._exit(0 if ok else 1)


def test_a_forked_child_never_touches_its_parents_sockets(redis_url: str) -> None:
    made = target(redis_url, connect_timeout=2.0, socket_timeout=2.0)
    client, sync = RedisClient(made), SyncRedisClient(made)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(client.call("INCR", "forked")) == 1
        assert sync.call("PING") == b"PONG"  # both clients hold an open socket now
        child = multiprocessing.get_context("fork").Process(
            target=_child_uses_the_inherited_clients, args=(client, sync)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        # The parent's sockets were neither written on nor closed by the child: its next
        # calls use them, aligned.
        assert loop.run_until_complete(client.call("INCR", "forked")) == 4
        assert sync.call("INCR", "forked") == 5
        assert client.connections[0].connects == 1
        assert sync.connections[0].connects == 1
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
        sync.close()


def test_the_hot_path_never_writes_on_another_loops_socket(redis_url: str) -> None:
    # submit() tells "the wire's loop is the one running here" from the loop's thread,
    # not from get_running_loop(): a loop still running in another thread, or a loop
    # stopped since, must send this loop's command on a connection of its own.
    client = RedisClient(target(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    command = encode(b"INCR", b"hot")
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever, daemon=True)
    runner.start()
    try:
        connection = client.connections[0]
        there = asyncio.run_coroutine_threadsafe(connection.call(command), other)
        assert there.result(10) == 1  # opened on the other thread's running loop
        theirs = connection._wire
        assert theirs is not None
        assert asyncio.run(_submit(connection, command)) == 2  # here: a socket of its own
        assert connection.connects == 2
        assert asyncio.run(_submit(connection, command)) == 3  # the last loop has stopped
        assert connection.connects == 3
        assert not theirs.closed  # left to its loop, never closed from here
        asyncio.run_coroutine_threadsafe(_closed(theirs), other).result(10)
    finally:
        other.call_soon_threadsafe(other.stop)
        runner.join(10)
        other.close()
        asyncio.run(client.aclose())
    gc.collect()


async def _submit(connection: AsyncConnection, command: bytes) -> object:
    return await connection.submit(command)


async def _closed(wire: Wire) -> None:
    wire.kill("the test is over")
    await wire.gone
