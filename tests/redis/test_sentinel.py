"""SentinelResolver against a real Sentinel topology: a master, a replica, three Sentinels.

The topology is shared by the module (starting it takes ~2 s); the failover test kills
its master, so it runs last (tests run in file order) and the tests before it leave the
topology as they found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.redis.address import Address, TcpAddress
from sergas_guard.redis.sentinel import SentinelResolver
from tests.servers import RedisSentinel, RedisServer, free_port, redis_sentinel, redis_server

pytestmark = pytest.mark.redis

# Generous for a busy 2-core host where nothing is meant to time out.
PATIENT = 2.0


@pytest.fixture(scope="module")
def topology() -> Iterator[RedisSentinel]:
    with redis_sentinel(replicas=1, sentinels=3) as started:
        yield started


@pytest.fixture(scope="module")
def frozen() -> Iterator[RedisServer]:
    """A server that accepts connections and never answers (SIGSTOP), like a hung Sentinel."""
    with redis_server() as server:
        server.pause()
        yield server


def sentinels_of(topology: RedisSentinel) -> list[TcpAddress]:
    return [TcpAddress("127.0.0.1", port) for port in topology.sentinel_ports]


def address_of(server: RedisServer) -> TcpAddress:
    return TcpAddress("127.0.0.1", server.port)


Resolve = Callable[[SentinelResolver], Awaitable[Address]]


async def resolve_async(resolver: SentinelResolver) -> Address:
    return await resolver.resolve()


async def resolve_in_thread(resolver: SentinelResolver) -> Address:
    return await asyncio.to_thread(resolver.resolve_sync)


@pytest.fixture(params=[resolve_async, resolve_in_thread], ids=["async", "sync"])
def resolve(request: pytest.FixtureRequest) -> Resolve:
    """Both faces of the resolver: the same tests hold for each."""
    face: Resolve = request.param
    return face


@contextlib.contextmanager
def monitored(topology: RedisSentinel, port: int, service: str, target: int) -> Iterator[None]:
    """Make the Sentinel on ``port`` also watch ``target`` as the master of ``service``,
    with a quorum no Sentinel set can reach (so it never fails it over)."""
    topology.sentinel_command(port, "SENTINEL", "MONITOR", service, "127.0.0.1", str(target), "9")
    try:
        yield
    finally:
        topology.sentinel_command(port, "SENTINEL", "REMOVE", service)


async def test_resolve_returns_the_master(topology: RedisSentinel, resolve: Resolve) -> None:
    resolver = SentinelResolver(sentinels_of(topology), topology.service, connect_timeout=PATIENT)
    assert await resolve(resolver) == address_of(topology.master)
    assert resolver.master == address_of(topology.master)


async def test_a_dead_sentinel_is_skipped_and_the_answering_one_moves_first(
    topology: RedisSentinel, frozen: RedisServer, resolve: Resolve
) -> None:
    refused = TcpAddress("127.0.0.1", free_port())
    hung = address_of(frozen)
    first_live = sentinels_of(topology)[0]
    resolver = SentinelResolver(
        [refused, hung, *sentinels_of(topology)], topology.service, connect_timeout=0.5
    )
    started = time.monotonic()
    assert await resolve(resolver) == address_of(topology.master)
    assert time.monotonic() - started >= 0.5  # it did wait for the hung one, once
    assert resolver.sentinels == (first_live, refused, hung, *sentinels_of(topology)[1:])

    # Cached: no Sentinel is asked until a connection reports the master failed.
    resolver.invalidate(TcpAddress("127.0.0.1", topology.replicas[0].port))
    assert resolver.master == address_of(topology.master)
    started = time.monotonic()
    resolver.invalidate(address_of(topology.master))
    assert resolver.master is None
    assert await resolve(resolver) == address_of(topology.master)
    # The lookup started with the Sentinel that answered: the hung one cost nothing.
    assert time.monotonic() - started < 0.5


async def test_a_replica_named_as_master_is_not_returned(
    topology: RedisSentinel, resolve: Resolve
) -> None:
    first, second, _ = topology.sentinel_ports
    replica = topology.replicas[0]
    # A Sentinel with a stale view names the replica; another names the real master.
    with (
        monitored(topology, first, "stale-view", replica.port),
        monitored(topology, second, "stale-view", topology.master.port),
    ):
        resolver = SentinelResolver(
            [TcpAddress("127.0.0.1", first), TcpAddress("127.0.0.1", second)],
            "stale-view",
            connect_timeout=PATIENT,
        )
        assert await resolve(resolver) == address_of(topology.master)
        assert resolver.sentinels[0] == TcpAddress("127.0.0.1", second)

        only_stale = SentinelResolver(
            [TcpAddress("127.0.0.1", first)], "stale-view", connect_timeout=PATIENT
        )
        with pytest.raises(StorageUnavailable, match=r"is not a master \(ROLE slave\)"):
            await resolve(only_stale)
        assert only_stale.master is None


async def test_an_unknown_service_is_a_clear_error(
    topology: RedisSentinel, resolve: Resolve
) -> None:
    resolver = SentinelResolver(sentinels_of(topology), "no-such-service", connect_timeout=PATIENT)
    with pytest.raises(StorageUnavailable) as caught:
        await resolve(resolver)
    message = str(caught.value)
    assert "no Sentinel named a master for service 'no-such-service'" in message
    for port in topology.sentinel_ports:
        assert f"Sentinel 127.0.0.1:{port} knows no master named 'no-such-service'" in message


async def test_a_redis_server_that_is_no_sentinel_is_named(
    topology: RedisSentinel, resolve: Resolve
) -> None:
    resolver = SentinelResolver(
        [address_of(topology.master)], topology.service, connect_timeout=PATIENT
    )
    with pytest.raises(StorageUnavailable, match=r"answered an error \(ERR unknown command"):
        await resolve(resolver)


async def test_no_sentinel_reachable_fails_fast(frozen: RedisServer, resolve: Resolve) -> None:
    refused = TcpAddress("127.0.0.1", free_port())
    resolver = SentinelResolver([refused, address_of(frozen)], "mymaster", connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await resolve(resolver)
    elapsed = time.monotonic() - started
    # One timeout for the hung Sentinel, nothing for the refusing one: no retry loop.
    assert 0.3 <= elapsed < 1.5
    assert f"Sentinel {refused} refused the connection" in str(caught.value)
    assert f"Sentinel 127.0.0.1:{frozen.port} did not answer in time" in str(caught.value)


async def test_concurrent_resolves_share_one_lookup(topology: RedisSentinel) -> None:
    resolver = SentinelResolver(sentinels_of(topology), topology.service, connect_timeout=PATIENT)
    before = _role_calls(topology)
    answers = await asyncio.gather(*(resolver.resolve() for _ in range(50)))
    assert set(answers) == {address_of(topology.master)}
    # One lookup: the master was asked its ROLE once, not fifty times (Sentinels and
    # replicas never ask it that).
    assert _role_calls(topology) - before == 1


def test_concurrent_threads_share_one_lookup(topology: RedisSentinel) -> None:
    resolver = SentinelResolver(sentinels_of(topology), topology.service, connect_timeout=PATIENT)
    before = _role_calls(topology)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: resolver.resolve_sync(), range(20)))
    assert set(answers) == {address_of(topology.master)}
    assert _role_calls(topology) - before == 1


def _role_calls(topology: RedisSentinel) -> int:
    for line in topology.data_command(topology.master.port, "INFO", "commandstats"):
        if line.startswith("cmdstat_role:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_a_cancelled_caller_does_not_cancel_the_others(topology: RedisSentinel) -> None:
    resolver = SentinelResolver(sentinels_of(topology), topology.service, connect_timeout=PATIENT)
    impatient = asyncio.create_task(resolver.resolve())
    patient = asyncio.create_task(resolver.resolve())
    await asyncio.sleep(0)
    impatient.cancel()
    assert await patient == address_of(topology.master)
    assert impatient.cancelled()


async def test_after_the_master_dies_the_promoted_replica_is_returned(
    topology: RedisSentinel,
) -> None:
    """Runs last: it leaves the topology with a new master and no replica."""
    resolver = SentinelResolver(sentinels_of(topology), topology.service, connect_timeout=PATIENT)
    old = await resolver.resolve()
    dead = topology.kill_master()
    assert old == address_of(dead)

    # Until a connection reports the failure, the resolver keeps its answer.
    assert await resolver.resolve() == old
    resolver.invalidate(old)
    # The Sentinels still name the dead master for down-after-milliseconds (1 s):
    # the ROLE check refuses it, and nothing else is named.
    with pytest.raises(StorageUnavailable, match="refused the connection"):
        await resolver.resolve()

    promoted = topology.wait_for_failover()
    assert await resolver.resolve() == address_of(promoted)
    assert resolver.resolve_sync() == address_of(promoted)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sentinels": []}, "sentinels"),
        ({"sentinels": "127.0.0.1:26379"}, "sentinels"),
        ({"sentinels": [("127.0.0.1", 26379)]}, "sentinels"),
        ({"sentinels": [TcpAddress("", 26379)]}, "sentinels"),
        ({"sentinels": [TcpAddress("127.0.0.1", 0)]}, "sentinels"),
        ({"sentinels": [TcpAddress("127.0.0.1", 65536)]}, "sentinels"),
        ({"sentinels": [TcpAddress("127.0.0.1", True)]}, "sentinels"),
        ({"service": ""}, "service"),
        ({"service": "my master"}, "service"),
        ({"service": 7}, "service"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"connect_timeout": "1"}, "connect_timeout"),
        ({"username": "app"}, "username"),
        ({"username": "", "password": "pw-x"}, "username"),
        ({"password": ""}, "password"),
        ({"master_username": "app"}, "master_username"),
        ({"master_password": 12345678}, "master_password"),
        ({"ssl": True}, "ssl"),
    ],
)
def test_bad_arguments_name_their_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "sentinels": [TcpAddress("127.0.0.1", 26379)],
        "service": "mymaster",
        "connect_timeout": 0.1,
        **kwargs,
    }
    with pytest.raises(ConfigurationError) as caught:
        SentinelResolver(**arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_password_of_the_wrong_type_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SentinelResolver(
            [TcpAddress("127.0.0.1", 26379)],
            "mymaster",
            password=b"Bytes-Secret-9f",  # type: ignore[arg-type]
            connect_timeout=0.1,
        )
    assert "Bytes-Secret-9f" not in str(caught.value)


def test_the_same_sentinel_twice_is_asked_once() -> None:
    one = TcpAddress("127.0.0.1", 26379)
    resolver = SentinelResolver([one, one], "mymaster", connect_timeout=0.1)
    assert resolver.sentinels == (one,)
