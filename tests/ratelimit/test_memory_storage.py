"""MemoryStorage: same decisions as the pure strategies, atomic, bounded."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
from collections import deque
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.clock import ManualClock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores import memory as memory_module
from sergas_guard.ratelimit.strategies import decide, sliding_log
from sergas_guard.storage import LimitCheck, MemoryStorage, storage_from_url
from tests.ratelimit.strategies_support import EPOCH_US, arrivals, limit_specs

SECOND = 1_000_000


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_memory_storage_decides_exactly_like_the_pure_strategy(data: st.DataObject) -> None:
    """Forgetting a key once it has fully reset must never change a decision."""
    spec = data.draw(limit_specs())
    sequence = data.draw(arrivals(spec))
    storage = MemoryStorage()
    state: Any = None
    for now, cost in sequence:
        state, expected = decide(state, now, cost, spec)
        assert storage.decide_sync([LimitCheck("k", spec)], cost, now) == [expected]


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_hammered_key_is_answered_exactly_as_the_pure_strategy_would(
    data: st.DataObject,
) -> None:
    """Repeated rejections are served from a memo; they must match the strategy to the µs.

    A burst fills the limit, then requests of cost 1 and peeks arrive at short,
    irregular gaps (a client retrying too early), with the odd heavier request, so
    memos are made, used, outlived and replaced by admissions.
    """
    spec = data.draw(limit_specs())
    now = data.draw(st.integers(EPOCH_US, EPOCH_US + 10 * spec.window_us))
    interval = max(1, spec.window_us // spec.limit)
    storage = MemoryStorage()
    state: Any = None
    for _ in range(data.draw(st.integers(1, 80))):
        cost = data.draw(st.sampled_from([1, 1, 1, 0, min(2, spec.capacity)]))
        now += data.draw(st.one_of(st.just(0), st.integers(1, 50), st.integers(0, 2 * interval)))
        state, expected = decide(state, now, cost, spec)
        assert storage.decide_sync([LimitCheck("k", spec)], cost, now) == [expected]


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_several_limits_are_all_or_nothing(data: st.DataObject) -> None:
    """A request passes only if every limit admits it; a rejection consumes from none."""
    first = data.draw(limit_specs())
    second = data.draw(limit_specs())
    capacity = min(first.capacity, second.capacity)
    sequence = [(t, min(c, capacity)) for t, c in data.draw(arrivals(first))]
    storage = MemoryStorage()
    states: list[Any] = [None, None]
    for now, cost in sequence:
        results = storage.decide_sync([LimitCheck("a", first), LimitCheck("b", second)], cost, now)
        singles = [decide(states[i], now, cost, spec) for i, spec in enumerate((first, second))]
        admitted = all(result.allowed for _, result in singles)
        assert all(r.allowed for r in results) == admitted
        if admitted:
            states = [new_state for new_state, _ in singles]
            assert results == [result for _, result in singles]
        else:
            # Nothing consumed: limits that would have admitted report what a peek sees.
            for i, spec in enumerate((first, second)):
                if singles[i][1].allowed:
                    assert results[i] == decide(states[i], now, 0, spec)[1]
                else:
                    assert results[i] == singles[i][1]


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_a_log_updated_in_place_decides_exactly_like_the_pure_log(data: st.DataObject) -> None:
    """decide_in_place keeps only the live entries and decides as decide() does."""
    limit = data.draw(st.integers(1, 300))
    window = data.draw(st.integers(1, 5_000_000))
    spec = LimitSpec(RateLimitStrategy.SLIDING_LOG, limit, window, limit)
    # Gaps of exactly one window put entries on the boundary, where they expire.
    gaps = st.one_of(
        st.just(0), st.just(window), st.integers(0, window // limit + 1), st.integers(0, window)
    )
    now = EPOCH_US
    sequence = []
    for gap in data.draw(st.lists(gaps, min_size=1, max_size=120)):
        now += gap
        sequence.append((now, data.draw(st.integers(0, limit))))
    pure: Any = None
    log: deque[int] | None = None
    for now, cost in sequence:
        pure, expected = decide(pure, now, cost, spec)
        log, result = sliding_log.decide_in_place(log, now, cost, spec)
        assert result == expected
        assert list(log) == [t for t in pure or () if t > now - window]


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_logs_kept_in_place_decide_like_the_pure_strategy_alone_or_with_others(
    data: st.DataObject,
) -> None:
    """Large-limit logs (deques in the storage) stay exact, and all-or-nothing with others."""
    log = data.draw(limit_specs(RateLimitStrategy.SLIDING_LOG))
    other = data.draw(limit_specs())
    capacity = min(log.capacity, other.capacity)
    sequence = [(t, min(c, capacity)) for t, c in data.draw(arrivals(log))]
    together = data.draw(st.lists(st.booleans(), min_size=len(sequence), max_size=len(sequence)))
    with mock.patch.object(memory_module, "MUTABLE_LOG_FROM", 1):
        storage = MemoryStorage()
        states: list[Any] = [None, None]
        for (now, cost), both in zip(sequence, together, strict=True):
            if not both:
                states[0], expected = decide(states[0], now, cost, log)
                assert storage.decide_sync([LimitCheck("a", log)], cost, now) == [expected]
                continue
            results = storage.decide_sync([LimitCheck("a", log), LimitCheck("b", other)], cost, now)
            singles = [decide(states[i], now, cost, spec) for i, spec in enumerate((log, other))]
            if all(result.allowed for _, result in singles):
                states = [new_state for new_state, _ in singles]
                assert results == [result for _, result in singles]
            else:
                assert not all(r.allowed for r in results)
                for i, spec in enumerate((log, other)):
                    if singles[i][1].allowed:
                        assert results[i] == decide(states[i], now, 0, spec)[1]
                    else:
                        assert results[i] == singles[i][1]


@pytest.mark.parametrize("strategy", list(RateLimitStrategy))
def test_threads_never_admit_more_than_the_limit(strategy: RateLimitStrategy) -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    spec = LimitSpec(strategy, 100, 3600 * SECOND, 100)
    admitted = 0
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        nonlocal admitted
        barrier.wait()
        for _ in range(50):
            if storage.decide_sync([LimitCheck("hot", spec)], 1)[0].allowed:
                with lock:
                    admitted += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted == 100


async def test_async_tasks_never_admit_more_than_the_limit() -> None:
    storage = MemoryStorage(clock=ManualClock())
    spec = LimitSpec(RateLimitStrategy.SLIDING_LOG, 100, 3600 * SECOND, 100)

    async def one() -> bool:
        await asyncio.sleep(0)
        return (await storage.decide([LimitCheck("hot", spec)], 1))[0].allowed

    outcomes = await asyncio.gather(*(one() for _ in range(400)))
    assert sum(outcomes) == 100


def test_lru_cap_bounds_a_flood_of_distinct_keys() -> None:
    """1,000,000 distinct clients: the storage never holds more than max_keys."""
    clock = ManualClock()
    storage = MemoryStorage(max_keys=10_000, clock=clock)
    spec = LimitSpec(RateLimitStrategy.SLIDING_LOG, 5, 3600 * SECOND, 5)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(1_000_000):
            storage.decide_sync([LimitCheck(f"client-{i}", spec)], 1)
            if i % 100_000 == 0:
                assert len(storage) <= 10_000
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert len(storage) == 10_000
    # ~10,000 entries of a short key, a tuple and an int: a few MB, not the ~200 MB
    # that a million entries would take.
    assert held < 8_000_000


def test_least_recently_used_key_is_evicted_first() -> None:
    clock = ManualClock()
    storage = MemoryStorage(max_keys=2, clock=clock)
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1, 3600 * SECOND, 1)
    check = {name: [LimitCheck(name, spec)] for name in "abc"}
    storage.decide_sync(check["a"], 1)
    storage.decide_sync(check["b"], 1)
    storage.decide_sync(check["a"], 0)  # touching "a" makes "b" the oldest
    storage.decide_sync(check["c"], 1)
    assert not storage.decide_sync(check["a"], 1)[0].allowed  # still remembered
    assert storage.decide_sync(check["b"], 1)[0].allowed  # was forgotten


def test_fully_reset_keys_are_forgotten_lazily() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    spec = LimitSpec(RateLimitStrategy.TOKEN_BUCKET, 10, SECOND, 10)
    result = storage.decide_sync([LimitCheck("k", spec)], 3)[0]
    assert len(storage) == 1
    clock.advance(result.reset_after)
    peek = storage.decide_sync([LimitCheck("k", spec)], 0)[0]
    assert peek.remaining == 10
    assert len(storage) == 0


async def test_reset_and_clear() -> None:
    storage = MemoryStorage(clock=ManualClock())
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1, 3600 * SECOND, 1)
    for key in ("app:a:1", "app:a:2", "app:b:1"):
        await storage.decide([LimitCheck(key, spec)], 1)
    await storage.reset("app:a:1")
    assert (await storage.decide([LimitCheck("app:a:1", spec)], 1))[0].allowed
    assert await storage.clear("app:a") == 2
    assert len(storage) == 1
    assert storage.clear_sync() == 1


def test_storage_from_url() -> None:
    assert isinstance(storage_from_url("memory://"), MemoryStorage)
    assert storage_from_url("memory://?max_keys=7").max_keys == 7
    with pytest.raises(ConfigurationError, match="unknown storage URL"):
        storage_from_url("mongodb://user:hunter2@db/")
    with pytest.raises(ConfigurationError) as caught:
        storage_from_url("ftp://user:hunter2@host/")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="max_keys"):
        MemoryStorage(max_keys=0)


def test_a_cost_above_capacity_is_refused_by_the_storage_itself() -> None:
    storage = MemoryStorage(clock=ManualClock())
    spec = LimitSpec(RateLimitStrategy.SLIDING_LOG, 3, SECOND, 3)
    with pytest.raises(ConfigurationError, match="cost 4 exceeds"):
        storage.decide_sync([LimitCheck("k", spec)], 4)
    with pytest.raises(ConfigurationError, match="cost 4 exceeds"):
        storage.decide_sync([LimitCheck("a", spec), LimitCheck("b", spec)], 4)
    assert len(storage) == 0
