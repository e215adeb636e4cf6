"""Breakers shared through a real redis-server: processes, outages, keys, cluster."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sergas_guard.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerManager,
    CircuitOpenError,
    CircuitState,
)
from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore, breaker_key
from sergas_guard.clock import ManualClock
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.redis.backend import ScriptBackend
from tests.circuit_breaker import workers
from tests.circuit_breaker.support import Boom, config, fail_times, is_refused, state, succeed
from tests.servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

PATIENCE = 60.0


@pytest.fixture
def storage(redis_url: str) -> Iterator[RedisStorage]:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    yield storage
    storage.close_sync()


def collect(results: Any, count: int) -> list[tuple[str, str]]:
    return [results.get(timeout=PATIENCE) for _ in range(count)]


def test_failures_in_one_process_open_the_breaker_in_all(
    redis_url: str, storage: RedisStorage
) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    go, opened, closed = context.Event(), context.Event(), context.Event()
    name = "payments"
    observers = [
        context.Process(
            target=workers.observing_worker,
            args=(redis_url, name, f"observer-{i}", opened, closed, results),
        )
        for i in range(3)
    ]
    failing = context.Process(target=workers.failing_worker, args=(redis_url, name, go, results))
    processes = [*observers, failing]
    for process in processes:
        process.start()
    try:
        before = collect(results, 4)
        assert Counter(outcome for _, outcome in before) == {"admitted": 3, "ready": 1}
        go.set()
        assert collect(results, 1) == [("failing", "open")]
        opened.set()
        assert [outcome for _, outcome in collect(results, 3)] == ["open"] * 3

        here = CircuitBreaker(name, config(), storage=storage)
        assert state(here) is CircuitState.OPEN  # this process sees it too
        here.transition_to_closed()  # and closing here closes it everywhere
        closed.set()
        assert [outcome for _, outcome in collect(results, 3)] == ["admitted"] * 3
    finally:
        for process in processes:
            process.join(PATIENCE)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]


def test_processes_crowding_a_half_open_breaker_get_exactly_the_permitted_probes(
    redis_url: str, storage: RedisStorage
) -> None:
    processes_count, threads = 4, 25
    breaker = CircuitBreaker(
        "crowded",
        config(permitted_calls_in_half_open=5, slow_call_duration=workers.PATIENCE),
        storage=storage,
    )
    breaker.transition_to_half_open()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    gate = context.Event()
    processes = [
        context.Process(
            target=workers.half_open_crowd, args=(redis_url, "crowded", threads, gate, results)
        )
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    try:
        # Every caller reports once: a probe while parked at the gate, a refusal at once.
        outcomes = Counter(kind for kind, _ in collect(results, processes_count * threads))
        assert outcomes == {"probe": 5, "refused": processes_count * threads - 5}
    finally:
        gate.set()
        for process in processes:
            process.join(PATIENCE)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * processes_count
    assert state(breaker) is CircuitState.CLOSED


def test_the_slot_of_a_probe_whose_process_died_is_given_to_another_caller(
    redis_url: str, storage: RedisStorage
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "search",
        config(permitted_calls_in_half_open=1, probe_timeout=3.0),
        storage=RedisBreakerStore(storage, clock=clock),
    )
    breaker.transition_to_half_open()
    process = multiprocessing.get_context("spawn").Process(
        target=workers.probe_and_die, args=(redis_url, "search", clock.time())
    )
    process.start()
    process.join(PATIENCE)
    assert process.exitcode == 0
    assert breaker.get_metrics()["probes_in_flight"] == 1
    assert is_refused(breaker)
    clock.advance(3.0)  # the dead probe's lease runs out
    assert breaker.call_sync(succeed) == "ok"
    assert state(breaker) is CircuitState.CLOSED


def test_a_failover_storage_counts_as_the_storage_it_guards(storage: RedisStorage) -> None:
    from sergas_guard.ratelimit.stores.failover import FailoverStorage

    first = CircuitBreaker("quotes", config(), storage=FailoverStorage(storage))
    second = CircuitBreaker("quotes", config(), storage=storage)
    fail_times(first, 4)
    assert first.get_metrics()["storage"] == "redis"
    assert state(second) is CircuitState.OPEN


def test_keys_carry_a_hash_tag_and_a_ttl(storage: RedisStorage) -> None:
    breaker = CircuitBreaker("inventory", config(), storage=storage)
    breaker.call_sync(succeed)
    key = breaker_key(storage.key_prefix, "inventory")
    assert key == "sg:cb:{inventory}"
    assert storage.sync_client.ttl(key) >= 86_400


def test_breakers_given_one_storage_share_state_and_the_async_face_agrees(
    storage: RedisStorage,
) -> None:
    first = CircuitBreaker("catalog", config(), storage=storage)
    second = CircuitBreaker("catalog", config(), storage=storage)
    fail_times(first, 4)
    assert is_refused(second)
    assert second.get_metrics()["rejected_calls"] == 1


async def test_async_face_shares_the_same_state(storage: RedisStorage) -> None:
    breaker = CircuitBreaker("ledger", config(), storage=storage)
    for _ in range(4):
        with pytest.raises(ZeroDivisionError):
            await breaker.call(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(succeed)
    assert 0 < refused.value.retry_after <= 10.0
    metrics = await breaker.get_metrics_async()
    assert (metrics["state"], metrics["storage"]) == ("open", "redis")
    assert await breaker.get_state() is CircuitState.OPEN
    await storage.aclose()


def test_falls_back_to_local_state_while_redis_is_down(own_redis: RedisServer) -> None:
    clock = ManualClock()
    storage = RedisStorage(own_redis.url)
    breaker = CircuitBreaker(
        "mail", config(storage_retry_interval=5.0), storage=storage, clock=clock
    )
    fail_times(breaker, 2)
    own_redis.stop()
    try:
        assert breaker.call_sync(succeed) == "ok"  # served from local state
        metrics = breaker.get_metrics()
        assert metrics["storage_fallback"] is True
        assert metrics["storage_errors"] == 1
        fail_times(breaker, 3)  # the local breaker still protects the caller
        assert is_refused(breaker)
        assert breaker.get_metrics()["storage_errors"] == 1  # the dead store is not retried yet
    finally:
        own_redis.start()
    clock.advance(5.0)
    metrics = breaker.get_metrics()
    assert metrics["storage_fallback"] is False
    assert metrics["state"] == "closed"  # the restarted, empty Redis is the truth again
    storage.close_sync()


def test_a_frozen_redis_costs_one_timeout_then_local_state(own_redis: RedisServer) -> None:
    clock = ManualClock()
    storage = RedisStorage(own_redis.url, socket_timeout=0.05, connect_timeout=0.05)
    breaker = CircuitBreaker("sms", config(), storage=storage, clock=clock)
    breaker.call_sync(succeed)
    own_redis.pause()
    try:
        for _ in range(20):
            assert breaker.call_sync(succeed) == "ok"
        assert breaker.get_metrics()["storage_errors"] == 1
    finally:
        own_redis.resume()
    storage.close_sync()


@pytest.mark.cluster
async def test_works_on_redis_cluster(redis_cluster_session: RedisCluster) -> None:
    writer = RedisStorage(redis_cluster_session.url, socket_timeout=5.0, connect_timeout=5.0)
    reader = RedisStorage(redis_cluster_session.url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        names = [f"svc-{i}" for i in range(6)]  # spread over the cluster's slots
        for name in names:
            fail_times(CircuitBreaker(name, config(), storage=writer), 4)
        for name in names:
            breaker = CircuitBreaker(name, config(), storage=reader)
            with pytest.raises(CircuitOpenError):
                await breaker.call(succeed)
            breaker.reset()
            assert await breaker.call(succeed) == "ok"
    finally:
        await writer.aclose()
        await reader.aclose()


@pytest.mark.cluster
async def test_a_manager_given_a_cluster_url_shares_with_a_storage(
    redis_cluster_session: RedisCluster,
) -> None:
    # The URL becomes one ScriptBackend for every breaker of the manager, no storage.
    manager = CircuitBreakerManager(config(), storage=redis_cluster_session.url)
    backend = manager.storage.storage
    assert isinstance(backend, ScriptBackend)
    assert backend.is_cluster
    reader = RedisStorage(redis_cluster_session.url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        for name in (f"url-{i}" for i in range(4)):  # over several slots
            breaker = manager.get_or_create(name)
            for _ in range(4):
                with contextlib.suppress(Boom):
                    await breaker.call(fail_async)
            with pytest.raises(CircuitOpenError):
                await CircuitBreaker(name, config(), storage=reader).call(succeed)
    finally:
        await reader.aclose()
        await backend.aclose()


async def fail_async() -> None:
    raise Boom("dependency failed")
