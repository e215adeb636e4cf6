"""The representable bounds: what passes construction decides without error everywhere.

Limits at the edges of :mod:`sergas_guard.ratelimit.bounds` decide on a real redis-server
exactly as on the memory storage (the Lua and Python twins agree), and a hypothesis
property generates configurations across and beyond the bounds: each is refused at
construction with a ConfigurationError, or decides without error on both storages.
Before, ``"5/100000000000 years"`` or ``window_seconds=1e300`` passed construction and
then failed every request on Redis.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.bounds import (
    MAX_COUNT,
    MAX_EXACT,
    MAX_SLIDING_LOG_LIMIT,
    MAX_WINDOW_SECONDS,
    MAX_WINDOW_US,
)
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.validation import MAX_SECONDS
from tests.servers import RedisServer

S = RateLimitStrategy
_keys = itertools.count()


@pytest.fixture(scope="module")
def redis(redis_session: RedisServer) -> Iterator[RedisStorage]:
    """One storage for the module (hypothesis examples share it; keys never repeat)."""
    if redis_session.process is None or redis_session.process.poll() is not None:
        redis_session.start()
    storage = RedisStorage(redis_session.url, connect_timeout=2.0, socket_timeout=2.0)
    yield storage
    storage.close_sync()


def _now() -> int:
    # A day ahead of the server's clock, so keys (absolute expiry) outlive the test.
    return time.time_ns() // 1000 + 86_400 * 1_000_000


def _same_decisions(config: RateLimitConfig, redis: RedisStorage, costs: list[int]) -> None:
    """Run ``costs`` at one instant on both storages; every result must be identical."""
    memory = MemoryStorage()
    identity = next(_keys)
    checks = [LimitCheck(f"sg:bounds:{{{identity}}}:{spec.slug}", spec) for spec in config.specs()]
    now = _now()
    for step, cost in enumerate(costs):
        expected = memory.decide_sync(checks, cost, now + step)
        assert redis.decide_sync(checks, cost, now + step) == expected, (config, cost)


# The largest limit each window holds: limit x window (us) stays below 2**53.
EDGES = [
    pytest.param(S.FIXED_WINDOW, MAX_COUNT, 1e-6, None, id="fixed-2**52-per-us"),
    pytest.param(S.SLIDING_WINDOW, (MAX_EXACT - 1) // MAX_WINDOW_US, MAX_WINDOW_SECONDS, None,
                 id="sliding-50-years"),
    pytest.param(S.SLIDING_WINDOW, 104_249, 86_400, None, id="sliding-largest-day"),
    pytest.param(S.TOKEN_BUCKET, 5, MAX_WINDOW_SECONDS, 5, id="token-50-years"),
    # One a second, with a backlog of 100 years' worth.
    pytest.param(S.LEAKY_BUCKET, 1, 1.0, MAX_SECONDS, id="leaky-100-years-backlog"),
    pytest.param(S.SLIDING_LOG, MAX_SLIDING_LOG_LIMIT, 60, None, id="log-largest"),
    # Strategies that never multiply the limit by the window: no product bound.
    pytest.param(S.FIXED_WINDOW, 1_000_000, 86_400, None, id="fixed-million-a-day"),
    pytest.param(S.FIXED_WINDOW, MAX_COUNT, MAX_WINDOW_SECONDS, None, id="fixed-2**52-50-years"),
    pytest.param(S.SLIDING_LOG, MAX_SLIDING_LOG_LIMIT, MAX_WINDOW_SECONDS, None,
                 id="log-largest-50-years"),
]  # fmt: skip


@pytest.mark.redis
@pytest.mark.parametrize(("strategy", "limit", "window", "burst"), EDGES)
def test_largest_limits_decide_alike_on_redis_and_memory(
    redis: RedisStorage, strategy: RateLimitStrategy, limit: int, window: float, burst: int | None
) -> None:
    config = RateLimitConfig(
        max_requests=limit, window_seconds=window, strategy=strategy, burst=burst
    )
    capacity = config.specs()[0].capacity
    # A peek, the whole capacity at once, then one more (rejected), then a peek.
    _same_decisions(config, redis, [0, capacity, 1, 0])


@pytest.mark.redis
def test_a_full_window_of_the_largest_limit_admits_exactly_the_limit(
    redis: RedisStorage,
) -> None:
    limiter = RateLimiter(
        RateLimitConfig(name=f"edge{next(_keys)}", rate="104249/day"), redis, on_storage_error=None
    )
    assert limiter.hit_sync("k", 104_249).allowed
    refused = limiter.hit_sync("k", 1)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 2 * 86_400


def test_one_more_than_the_largest_limit_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at most 104249 requests") as caught:
        RateLimitConfig(rate="104250/day")
    assert caught.value.field == "rate"


@pytest.mark.parametrize("strategy", [S.FIXED_WINDOW, S.SLIDING_LOG])
def test_strategies_without_products_take_a_million_a_day(strategy: RateLimitStrategy) -> None:
    # "1000000/day" is a common limit: refused for the sliding window (whose error says
    # fixed_window takes it), built for the strategies that never multiply by the window.
    if strategy is S.SLIDING_LOG:
        with pytest.raises(ConfigurationError, match="at most 100000"):
            RateLimitConfig(rate="1000000/day", strategy=strategy)
        assert RateLimitConfig(rate="100000/day", strategy=strategy).specs()[0].limit == 100_000
        return
    assert RateLimitConfig(rate="1000000/day", strategy=strategy).specs()[0].limit == 1_000_000
    with pytest.raises(ConfigurationError, match="fixed_window has no such bound"):
        RateLimitConfig(rate="1000000/day", strategy=S.SLIDING_WINDOW)


configs = st.fixed_dictionaries(
    {
        "strategy": st.sampled_from(list(RateLimitStrategy)),
        "max_requests": st.one_of(
            st.integers(1, 20), st.integers(1, 2**60), st.sampled_from([MAX_COUNT, 104_249])
        ),
        "window_seconds": st.one_of(
            st.floats(1e-6, 10.0),
            st.floats(1e-7, 1e12, allow_nan=False, allow_infinity=False),
            st.sampled_from([86_400.0, float(MAX_WINDOW_SECONDS), 1e300]),
        ),
    },
    optional={"burst": st.one_of(st.integers(1, 30), st.integers(1, 2**60))},
)


@pytest.mark.redis
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(options=configs, data=st.data())
def test_any_accepted_config_decides_without_error_on_memory_and_redis(
    redis: RedisStorage, options: dict[str, object], data: st.DataObject
) -> None:
    if "burst" in options and options["strategy"] not in (S.TOKEN_BUCKET, S.LEAKY_BUCKET):
        del options["burst"]
    try:
        config = RateLimitConfig(**options)
    except ConfigurationError as error:
        refused_for = error.field
    else:
        refused_for = None
    if refused_for is not None:
        assert refused_for in {"max_requests", "window_seconds", "burst", "rate"}
        return
    capacity = config.specs()[0].capacity
    # Sliding logs hold one entry per unit: keep the costs (not the limits) small.
    top = min(capacity, 2_000) if config.strategy is S.SLIDING_LOG else capacity
    costs = data.draw(
        st.lists(
            st.one_of(st.integers(0, min(2, top)), st.integers(0, top), st.just(top)), max_size=6
        )
    )
    _same_decisions(config, redis, [*costs, 1])
