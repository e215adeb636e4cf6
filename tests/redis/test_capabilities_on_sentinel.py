"""Breakers, flags and health over ``redis+sentinel://``, through a real master kill.

Each test gets a topology of its own (a master, a replica, three Sentinels): it kills the
master. While the Sentinels fail over, each capability follows its policy (a breaker
decides on local state, flags serve their last snapshot, the health check reports
UNHEALTHY) and nothing raises to the caller; once the replica is promoted, decisions are
shared through Redis again, which a second process (a second storage) can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import pytest

from sergas_guard.circuit_breaker import CircuitBreaker, CircuitOpenError, CircuitState
from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
from sergas_guard.circuit_breaker.store import store_for
from sergas_guard.clock import ManualClock
from sergas_guard.degradation import FeatureFlags
from sergas_guard.errors import StorageUnavailable
from sergas_guard.health import CacheHealthCheck, HealthStatus
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.redis.backend import ScriptBackend
from tests.circuit_breaker.support import Boom, config, fail, is_refused, state, succeed
from tests.servers import RedisSentinel, redis_sentinel

pytestmark = pytest.mark.redis

# Short enough that the outage is seen at once, long enough for a loaded 2-core host.
TIMEOUT = 0.5
RETRY = 0.2  # the breaker's storage_retry_interval: back on Redis soon after failover


@pytest.fixture
def topology() -> Iterator[RedisSentinel]:
    with redis_sentinel(replicas=1, sentinels=3) as started:
        yield started


@pytest.fixture
def new_storage(topology: RedisSentinel) -> Iterator[Callable[[], RedisStorage]]:
    """RedisStorage objects on the topology's Sentinel URL (one per simulated process)."""
    made: list[RedisStorage] = []

    def make() -> RedisStorage:
        made.append(RedisStorage(topology.url, connect_timeout=TIMEOUT, socket_timeout=TIMEOUT))
        return made[-1]

    yield make
    for storage in made:
        storage.close_sync()


def promoted(topology: RedisSentinel) -> bool:
    """Whether the first Sentinel names a replica as master (the failover happened)."""
    answer = topology.master_addr_by(topology.sentinel_ports[0])
    return answer is not None and answer[1] in {replica.port for replica in topology.replicas}


def until_failover(topology: RedisSentinel, step: Callable[[], None]) -> int:
    """Kill the master and run ``step`` over and over until a replica is promoted; the
    number of steps run during the outage."""
    topology.kill_master()
    steps = 0
    deadline = time.monotonic() + 30
    while not promoted(topology) and time.monotonic() < deadline:
        step()
        steps += 1
    topology.wait_for_failover()
    return steps


def opens_there(here: CircuitBreaker, there: CircuitBreaker) -> bool:
    """Failures here open the breaker there: their state is shared through Redis. Tried
    for a few seconds (``here`` returns to Redis after its retry interval, ``there``
    refuses once its cached view of the shared state is renewed)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for _ in range(4):
            with contextlib.suppress(Boom, CircuitOpenError):  # here may open first
                here.call_sync(fail)
        if is_refused(there):
            return state(there) is CircuitState.OPEN
        time.sleep(RETRY)
    return False


def test_a_breaker_decides_through_a_master_kill(
    topology: RedisSentinel, new_storage: Callable[[], RedisStorage]
) -> None:
    settings = config(storage_retry_interval=RETRY)
    here = CircuitBreaker("payments", settings, storage=new_storage())
    # The other process names the store by its URL: no rate-limit storage behind it.
    store = store_for(topology.url)
    assert isinstance(store, RedisBreakerStore)
    backend = store.storage
    assert isinstance(backend, ScriptBackend)
    try:
        breaker_through_a_kill(
            topology, new_storage, here, CircuitBreaker("payments", settings, storage=store)
        )
    finally:
        backend.close_sync()


def breaker_through_a_kill(
    topology: RedisSentinel,
    new_storage: Callable[[], RedisStorage],
    here: CircuitBreaker,
    there: CircuitBreaker,
) -> None:
    settings = here.config
    assert opens_there(here, there)  # shared through the first master
    here.reset()

    def call() -> None:
        assert here.call_sync(succeed) == "ok"  # local state: closed, nothing raises

    assert until_failover(topology, call) >= 1
    assert here.get_metrics()["storage_errors"] >= 1
    time.sleep(RETRY * 2)  # here goes back to Redis after its retry interval
    here.reset()  # the promoted master may have the breaker open: replication is async
    # A new process (no cached view) sees it closed, then opened by failures here.
    newcomer = CircuitBreaker("payments", settings, storage=new_storage())
    assert not is_refused(newcomer)
    assert opens_there(here, newcomer)  # shared again, through the promoted master


async def test_an_async_breaker_decides_through_a_master_kill(
    topology: RedisSentinel,
) -> None:
    storages = [
        RedisStorage(topology.url, connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        for _ in range(2)
    ]
    try:
        await async_breaker_through_a_kill(topology, *storages)
    finally:
        for storage in storages:
            await storage.aclose()


async def async_breaker_through_a_kill(
    topology: RedisSentinel, first: RedisStorage, second: RedisStorage
) -> None:
    settings = config(storage_retry_interval=RETRY)
    here = CircuitBreaker("search", settings, storage=first)
    there = CircuitBreaker("search", settings, storage=second)

    async def ok() -> str:
        return "ok"

    assert await here.call(ok) == "ok"
    topology.kill_master()
    outage_calls = 0
    deadline = time.monotonic() + 30
    while not promoted(topology) and time.monotonic() < deadline:
        assert await here.call(ok) == "ok"  # never raises: local state in between
        outage_calls += 1
    topology.wait_for_failover()
    assert outage_calls >= 1
    assert here.get_metrics()["storage_errors"] >= 1
    # Back on Redis: the async face's failures open the breaker for the other process.
    deadline = time.monotonic() + 10
    while not is_refused(there) and time.monotonic() < deadline:
        for _ in range(4):
            with contextlib.suppress(Boom, CircuitOpenError):
                await here.call(boom)
        await asyncio.sleep(RETRY)
    assert state(there) is CircuitState.OPEN


async def boom() -> None:
    raise Boom("dependency failed")


def test_flags_serve_their_snapshot_through_a_master_kill(
    topology: RedisSentinel, new_storage: Callable[[], RedisStorage]
) -> None:
    clock = ManualClock()
    writer = FeatureFlags(storage=new_storage(), refresh_interval=0.5, clock=clock)
    reader = FeatureFlags(storage=new_storage(), refresh_interval=0.5, clock=clock)
    writer.register("search", enabled=True)
    clock.advance(1)
    assert reader.is_enabled("search")

    errors: list[str] = []

    def read() -> None:
        clock.advance(1)  # a refresh is due on every read: each one meets the outage
        assert reader.is_enabled("search")  # the last snapshot, no exception
        if reader.last_error is not None:
            errors.append(reader.last_error)

    until_failover(topology, read)
    assert errors  # the outage was met, and served from the snapshot
    assert all("unavailable" in error for error in errors)
    # Back on Redis: a change made by one worker reaches the other.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            writer.update("search", enabled=False)
            break
        except StorageUnavailable:  # the first write may still meet the old master
            time.sleep(0.1)
    clock.advance(1)
    assert not reader.is_enabled("search")
    assert reader.last_error is None


async def test_the_health_check_follows_the_master_through_a_kill(
    topology: RedisSentinel,
) -> None:
    check = CacheHealthCheck("cache", topology.url, timeout=2, degraded_latency=None)
    assert (await check.check()).status is HealthStatus.HEALTHY
    topology.kill_master()
    result = await check.check()  # the Sentinels still name the dead master
    assert result.status is HealthStatus.UNHEALTHY
    topology.wait_for_failover()
    deadline = time.monotonic() + 10
    while (await check.check()).status is not HealthStatus.HEALTHY:
        assert time.monotonic() < deadline, "the check never found the promoted master"
        await asyncio.sleep(0.1)
