"""The Lua twins agree with the Python strategies, field by field (differential test).

The same random arrival sequences, with an explicit `now`, go to the pure Python
`decide` and to the script in a real redis-server; every result must be identical,
and so must multi-limit decisions against the in-memory storage.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.ratelimit.strategies import decide as pure_decide
from tests.storage.conftest import DAY_US

pytestmark = pytest.mark.redis

S = RateLimitStrategy
_keys = itertools.count()
TWIN_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def specs(draw: st.DrawFn, strategy: RateLimitStrategy | None = None) -> LimitSpec:
    strategy = strategy or draw(st.sampled_from(list(RateLimitStrategy)))
    limit = draw(st.integers(1, 12))
    # Windows from a millisecond to a day, with awkward divisors among them.
    window = draw(
        st.one_of(
            st.sampled_from([1_000, 7_000, 999_999, 1_000_000, 3_000_001, 86_400_000_000]),
            st.integers(1_000, 120_000_000),
        )
    )
    if strategy in (S.TOKEN_BUCKET, S.LEAKY_BUCKET):
        burst = draw(st.integers(1, 2 * limit))
    else:
        burst = limit
    return LimitSpec(strategy, limit, window, burst)


@st.composite
def arrivals(draw: st.DrawFn, spec: LimitSpec) -> list[tuple[int, int]]:
    """(gap since the previous request in µs, cost) pairs; cost 0 is a peek."""
    w = spec.window_us
    gap = st.one_of(
        st.just(0),
        st.integers(0, w // 4 + 1),
        st.integers(0, 3 * w),
        st.sampled_from([1, w - 1, w, w + 1, 2 * w]),
    )
    cost = st.integers(0, spec.capacity)
    return draw(st.lists(st.tuples(gap, cost), min_size=1, max_size=30))


def start_time(offset: int) -> int:
    # A day ahead of the server clock so keys (absolute TTLs) never expire mid-example.
    return time.time_ns() // 1000 + DAY_US + offset


@pytest.mark.parametrize("strategy", list(RateLimitStrategy))
@TWIN_SETTINGS
@given(data=st.data(), offset=st.integers(0, 10**12))
def test_lua_twin_equals_python(
    module_redis: RedisStorage, strategy: RateLimitStrategy, data: st.DataObject, offset: int
) -> None:
    spec = data.draw(specs(strategy))
    key = f"twin:{next(_keys)}"
    now = start_time(offset)
    state = None
    for gap, cost in data.draw(arrivals(spec)):
        now += gap
        state, expected = pure_decide(state, now, cost, spec)
        got = module_redis.decide_sync([LimitCheck(key, spec)], cost, now)[0]
        assert got == expected, (spec, now, cost)
        assert type(got.remaining) is int
        if strategy is S.SLIDING_LOG:
            # The log holds at most `limit` entries.
            assert module_redis.sync_client.llen(key) <= spec.limit


@TWIN_SETTINGS
@given(data=st.data(), offset=st.integers(0, 10**12))
def test_multi_limit_decisions_equal_memory_storage(
    module_redis: RedisStorage, data: st.DataObject, offset: int
) -> None:
    limits = data.draw(st.lists(specs(), min_size=2, max_size=4, unique_by=lambda s: s.slug))
    identity = next(_keys)
    checks = [LimitCheck(f"sg:multi:{{{identity}}}:{s.slug}", s) for s in limits]
    memory = MemoryStorage()
    capacity = min(s.capacity for s in limits)
    smallest = min(limits, key=lambda s: s.window_us)
    now = start_time(offset)
    for gap, cost in data.draw(arrivals(smallest)):
        now += gap
        cost = min(cost, capacity)
        expected = memory.decide_sync(checks, cost, now)
        assert module_redis.decide_sync(checks, cost, now) == expected, (limits, now, cost)
