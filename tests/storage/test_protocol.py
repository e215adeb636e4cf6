"""The storage protocol, one suite run against every backend (memory, real Redis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck, RateLimitStorage
from sergas_guard.ratelimit.stores.failover import FailoverStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.ratelimit.strategies import decide as pure_decide

Storage = MemoryStorage | RedisStorage | FailoverStorage
S = RateLimitStrategy
SECOND = 1_000_000


def spec_for(
    strategy: RateLimitStrategy, limit: int = 5, window_us: int = 60 * SECOND
) -> LimitSpec:
    return LimitSpec(strategy, limit, window_us, limit)


ALL = pytest.mark.parametrize("strategy", list(RateLimitStrategy))


async def test_backends_implement_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, RateLimitStorage)


@ALL
async def test_admits_up_to_the_limit_then_rejects_with_an_exact_wait(
    storage: Storage, strategy: RateLimitStrategy, t0: int
) -> None:
    spec = spec_for(strategy)
    check = [LimitCheck("sg:t:{alice}:" + spec.slug, spec)]
    results = [(await storage.decide(check, 1, t0))[0] for _ in range(spec.limit)]
    assert all(r.allowed for r in results)
    assert [r.remaining for r in results] == list(range(spec.limit - 1, -1, -1))
    rejected = (await storage.decide(check, 1, t0))[0]
    assert not rejected.allowed
    assert rejected.retry_after > 0
    wait_us = round(rejected.retry_after * SECOND)
    assert not (await storage.decide(check, 1, t0 + wait_us - 1))[0].allowed
    assert (await storage.decide(check, 1, t0 + wait_us))[0].allowed


@ALL
async def test_results_equal_the_pure_strategy(
    storage: Storage, strategy: RateLimitStrategy, t0: int
) -> None:
    spec = spec_for(strategy, limit=3, window_us=2 * SECOND)
    check = [LimitCheck("k", spec)]
    state = None
    for step, cost in enumerate([1, 2, 0, 1, 3, 1, 0, 2]):
        now = t0 + step * 300_000
        state, expected = pure_decide(state, now, cost, spec)
        assert (await storage.decide(check, cost, now))[0] == expected


@ALL
async def test_a_peek_changes_nothing(
    storage: Storage, strategy: RateLimitStrategy, t0: int
) -> None:
    spec = spec_for(strategy, limit=2)
    check = [LimitCheck("k", spec)]
    first = [(await storage.decide(check, 0, t0))[0] for _ in range(5)]
    assert all(r == first[0] and r.allowed for r in first)
    assert (await storage.decide(check, 2, t0))[0].allowed


@ALL
async def test_several_limits_are_all_or_nothing(
    storage: Storage, strategy: RateLimitStrategy, t0: int
) -> None:
    tight, loose = (
        spec_for(strategy, limit=2),
        spec_for(strategy, limit=10, window_us=3600 * SECOND),
    )
    checks = [LimitCheck("sg:t:{bob}:" + s.slug, s) for s in (tight, loose)]
    for _ in range(2):
        assert all(r.allowed for r in await storage.decide(checks, 1, t0))
    rejected = await storage.decide(checks, 1, t0)
    assert [r.allowed for r in rejected] == [False, True]
    # The loose limit consumed nothing and reports what a peek sees.
    assert rejected[1] == (await storage.decide(checks[1:], 0, t0))[0]
    assert rejected[1].remaining == 8


async def test_a_rejection_by_the_second_limit_consumes_from_the_first(
    storage: Storage, t0: int
) -> None:
    first = spec_for(S.SLIDING_LOG, limit=5)
    second = spec_for(S.FIXED_WINDOW, limit=1)
    checks = [LimitCheck("{p}:a", first), LimitCheck("{p}:b", second)]
    assert all(r.allowed for r in await storage.decide(checks, 1, t0))
    for _ in range(3):
        assert [r.allowed for r in await storage.decide(checks, 1, t0)] == [True, False]
    assert (await storage.decide(checks[:1], 0, t0))[0].remaining == 4


async def test_reset_forgets_a_key_and_the_keys_it_prefixes(storage: Storage, t0: int) -> None:
    spec = spec_for(S.SLIDING_WINDOW, limit=1)
    keys = ["sg:n:{x}:a", "sg:n:{x}:b", "sg:n:{y}:a"]
    for key in keys:
        await storage.decide([LimitCheck(key, spec)], 1, t0)
    await storage.reset("sg:n:{x}")
    assert [(await storage.decide([LimitCheck(k, spec)], 0, t0))[0].allowed for k in keys] == [
        True,
        True,
        False,
    ]
    await storage.reset("sg:n:{y}:a")
    assert (await storage.decide([LimitCheck(keys[2], spec)], 0, t0))[0].allowed


async def test_clear_deletes_by_prefix_and_counts(storage: Storage, t0: int) -> None:
    spec = spec_for(S.TOKEN_BUCKET)
    for name in ("sg:a:{1}:x", "sg:a:{2}:x", "sg:b:{1}:x", "sg:a*:{1}:x"):
        await storage.decide([LimitCheck(name, spec)], 1, t0)
    # A glob character in a prefix is a literal, not a pattern.
    assert await storage.clear("sg:a*") == 1
    assert await storage.clear("sg:a:") == 2
    assert await storage.clear("sg:") == 1
    assert await storage.clear("sg:") == 0


@ALL
def test_the_sync_face_shares_state_with_the_async_face(
    make_storage: Callable[[], Storage], strategy: RateLimitStrategy, t0: int
) -> None:
    storage = make_storage()
    spec = spec_for(strategy, limit=3)
    check = [LimitCheck("k", spec)]
    assert [storage.decide_sync(check, 1, t0)[0].allowed for _ in range(4)] == [True] * 3 + [False]
    storage.reset_sync("k")
    assert storage.decide_sync(check, 3, t0)[0] == RateLimitResult(
        True,
        spec.limit if strategy is not S.LEAKY_BUCKET else spec.burst,
        0,
        0.0,
        storage.decide_sync(check, 0, t0)[0].reset_after,
    )
    assert storage.clear_sync("k") == 1
    storage.close_sync()


def test_two_storage_objects_share_state(make_storage: Callable[[], Storage], t0: int) -> None:
    one, two = make_storage(), make_storage()
    spec = spec_for(S.SLIDING_LOG, limit=2)
    check = [LimitCheck("shared", spec)]
    assert one.decide_sync(check, 1, t0)[0].allowed
    assert two.decide_sync(check, 1, t0)[0].allowed
    assert not one.decide_sync(check, 1, t0)[0].allowed
