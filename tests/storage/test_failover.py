"""When Redis fails: a real redis-server is killed, paused and restarted under load.

The circuit's cool-down runs on a ManualClock, so no test sleeps through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.clock import ManualClock
from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.result import LimitSpec
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.failover import (
    FailoverStorage,
    FallbackResult,
    Policy,
    StorageFailClosed,
    UncheckedResult,
)
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

POLICIES: list[Policy] = ["fail_open", "fail_closed", "fallback"]
SPEC_FOR_PROPERTY = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 10**6, 60_000_000, 10**6)
CONFIG = RateLimitConfig(
    name="api", max_requests=5, window_seconds=3600, strategy=RateLimitStrategy.SLIDING_LOG
)


def limiter_for(
    server: RedisServer, policy: Policy, clock: ManualClock, **options: Any
) -> RateLimiter:
    redis_storage = RedisStorage(server.url, connect_timeout=0.5, socket_timeout=0.5)
    failover = FailoverStorage(
        redis_storage,
        policy,
        clock=clock,
        cooldown_seconds=5.0,
        **options,
    )
    return RateLimiter(CONFIG, failover)


async def flow(limiter: RateLimiter, stop: asyncio.Event, outcomes: Counter[str]) -> None:
    """One client sending requests until told to stop; counts what each came back as."""
    while not stop.is_set():
        try:
            result = await limiter.hit("alice")
            outcomes[type(result).__name__ + (":allowed" if result.allowed else ":rejected")] += 1
        except StorageFailClosed:
            outcomes["StorageFailClosed"] += 1
        await asyncio.sleep(0)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("policy", POLICIES)
async def test_killing_redis_under_load_follows_the_policy_then_recovers(
    own_redis: RedisServer, policy: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    limiter = limiter_for(own_redis, policy, clock)
    failover = limiter.storage
    assert isinstance(failover, FailoverStorage)
    assert (await limiter.hit("alice")).remaining == 4

    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="sergas_guard.ratelimit.stores.failover")
    # Any exception other than the policy's own would end a flow task and fail the gather.
    flows = [asyncio.create_task(flow(limiter, stop, outcomes)) for _ in range(10)]
    await asyncio.sleep(0.05)
    own_redis.stop()
    # Failures alone, at one instant, do not open the circuit: time without a reply does.
    await wait_until(lambda: failover.errors >= 20)
    assert failover.state == "closed"
    clock.advance(failover.config.failure_window)
    await wait_until(lambda: failover.state == "open")
    assert "no reply for 2.0s" in failover.get_metrics()["open_reason"]
    before = sum(outcomes.values())
    await wait_until(lambda: sum(outcomes.values()) > before + 200)

    metrics = limiter.get_metrics(detailed=True)["storage"]
    assert metrics["state"] == "open"
    assert metrics["policy"] == policy
    assert metrics["errors"] >= 20
    assert metrics["skipped"] > 100  # later requests did not even try Redis
    if policy == "fail_open":
        assert outcomes["UncheckedResult:allowed"] > 100
    elif policy == "fail_closed":
        assert outcomes["StorageFailClosed"] > 100
    else:
        # The local share of 5 per hour: 5 admitted here, then rejections with a wait.
        assert outcomes["FallbackResult:allowed"] == 5
        assert outcomes["FallbackResult:rejected"] > 100

    own_redis.start()
    clock.advance(5.0)
    await wait_until(lambda: failover.state == "closed")
    stop.set()
    await asyncio.gather(*flows)

    transitions = [r.getMessage() for r in caplog.records]
    assert sum("failing: no reply for 2.0s" in m for m in transitions) == 1
    assert sum("is back" in m for m in transitions) == 1

    # Decisions are shared again: a second limiter (another process) sees the same count.
    other = limiter_for(own_redis, policy, ManualClock())
    await limiter.reset("bob")
    await limiter.hit("bob", cost=2)
    assert (await other.peek("bob")).remaining == 3
    assert type(await other.hit("bob")) is not FallbackResult
    await limiter.aclose()
    await other.aclose()


def test_sync_face_probes_and_returns_by_itself(own_redis: RedisServer) -> None:
    clock = ManualClock()
    limiter = limiter_for(own_redis, "fallback", clock, failure_threshold=2)
    failover = limiter.storage
    assert isinstance(failover, FailoverStorage)
    own_redis.stop()
    results = [limiter.hit_sync("carol") for _ in range(8)]
    assert all(type(r) is FallbackResult for r in results)
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    assert failover.errors == 2
    assert failover.skipped == 6
    clock.advance(4.9)
    limiter.hit_sync("carol")
    assert failover.errors == 2  # still cooling down: Redis not tried
    clock.advance(0.2)
    limiter.hit_sync("carol")  # the probe: Redis is still down
    assert failover.errors == 3
    assert failover.state == "open"
    own_redis.start()
    clock.advance(5.1)
    assert type(limiter.hit_sync("carol")) is not FallbackResult
    assert failover.state == "closed"
    limiter.close()


def test_fallback_enforces_the_configured_share(own_redis: RedisServer) -> None:
    limiter = limiter_for(own_redis, "fallback", ManualClock(), fallback_share=0.4)
    own_redis.stop()
    assert sum(limiter.hit_sync("dave").allowed for _ in range(10)) == 2
    assert limiter.hit_sync("erin").limit == 2
    limiter.close()


def test_fail_open_reports_unchecked_admissions(own_redis: RedisServer) -> None:
    limiter = limiter_for(own_redis, "fail_open", ManualClock())
    own_redis.stop()
    result = limiter.hit_sync("frank", cost=2)
    assert isinstance(result, UncheckedResult)
    assert result.allowed
    assert result.remaining == 3
    limiter.close()


def test_fail_closed_raises_a_storage_unavailable_with_retry_after(
    own_redis: RedisServer,
) -> None:
    clock = ManualClock()
    limiter = limiter_for(own_redis, "fail_closed", clock, failure_threshold=1)
    own_redis.stop()
    with pytest.raises(StorageFailClosed) as first:
        limiter.hit_sync("gina")
    assert isinstance(first.value, StorageUnavailable)
    clock.advance(2.0)
    with pytest.raises(StorageFailClosed) as later:
        limiter.hit_sync("gina")
    assert later.value.retry_after == pytest.approx(3.0)
    assert "fail_closed" in str(later.value)
    limiter.close()


def test_a_callers_mistake_is_not_a_storage_failure(own_redis: RedisServer) -> None:
    failover = FailoverStorage(RedisStorage(own_redis.url), "fail_open", clock=ManualClock())
    limiter = RateLimiter(CONFIG, failover)
    own_redis.stop()
    with pytest.raises(ConfigurationError):
        failover.decide_sync(limiter.checks("x"), 6)
    assert failover.errors == 0
    limiter.close()


def test_reset_on_a_skipped_storage_raises_storage_unavailable(own_redis: RedisServer) -> None:
    limiter = limiter_for(own_redis, "fallback", ManualClock(), failure_threshold=1)
    own_redis.stop()
    limiter.hit_sync("hal")
    with pytest.raises(StorageUnavailable):
        limiter.reset_sync("hal")
    # The local fallback was reset all the same.
    assert limiter.peek_sync("hal").remaining == 5
    limiter.close()


async def test_a_paused_server_hits_the_timeout_not_a_hang(own_redis: RedisServer) -> None:
    storage = RedisStorage(own_redis.url, socket_timeout=0.2, connect_timeout=0.2)
    limiter = RateLimiter(CONFIG, storage, on_storage_error=None)
    assert limiter.hit_sync("ivy").allowed
    await limiter.hit("ivy")
    own_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="Timeout"):
            limiter.hit_sync("ivy")
        with pytest.raises(StorageUnavailable, match="Timeout"):
            await limiter.hit("ivy")
        # Generous bound: two timeouts of 0.2 s, one retry-free attempt each.
        assert time.monotonic() - started < 5.0
    finally:
        own_redis.resume()
    # Back to normal. The timed-out scripts sat in the frozen server's socket buffers and
    # ran when it resumed: a request that timed out may still have been counted.
    after = limiter.hit_sync("ivy")
    assert after.allowed
    assert 0 <= after.remaining <= 2
    await limiter.aclose()


def test_invalid_failover_options_name_the_field(own_redis: RedisServer) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RateLimiter(CONFIG, RedisStorage(own_redis.url), cooldown_seconds=0)
    assert caught.value.field == "cooldown_seconds"
    with pytest.raises(ConfigurationError) as policy:
        RateLimiter(CONFIG, RedisStorage(own_redis.url), on_storage_error="ignore")  # type: ignore[arg-type]
    assert policy.value.field == "on_storage_error"


def test_the_wrapper_exposes_the_wrapped_storage(own_redis: RedisServer) -> None:
    redis_storage = RedisStorage(own_redis.url)
    limiter = RateLimiter(CONFIG, redis_storage)  # the default policy wraps it
    assert isinstance(limiter.storage, FailoverStorage)
    assert limiter.storage.primary is redis_storage
    assert limiter.storage.sync_client is redis_storage.sync_client
    assert limiter.storage.is_cluster is False
    with pytest.raises(AttributeError):
        _ = limiter.storage.no_such_attribute
    limiter.close()


class _Scripted:
    """A storage that succeeds or fails call by call as told.

    A fake on purpose: the property below needs arbitrary sequences of successes and
    failures, one per call, which no real server produces on demand.
    """

    def __init__(self) -> None:
        self.fail_next = False
        self.memory = MemoryStorage()

    def decide_sync(self, checks: Any, cost: int, now_us: int | None = None) -> Any:
        if self.fail_next:
            raise StorageUnavailable("scripted failure")
        return self.memory.decide_sync(checks, cost, now_us)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)


@settings(max_examples=200, deadline=None)
@given(threshold=st.integers(1, 4), outcomes=st.lists(st.booleans(), max_size=30))
def test_the_circuit_opens_exactly_after_threshold_failures_in_a_row(
    threshold: int, outcomes: list[bool]
) -> None:
    # The healthy path skips recording successes while the breaker's window holds no
    # failure; that must never change when the circuit opens.
    primary = _Scripted()
    failover = FailoverStorage(
        primary,
        "fail_open",
        clock=ManualClock(),
        failure_threshold=threshold,
    )
    checks = [LimitCheck("sg:prop:{x}", SPEC_FOR_PROPERTY)]
    in_a_row = 0
    for failed in outcomes:
        primary.fail_next = failed
        failover.decide_sync(checks, 1)
        in_a_row = in_a_row + 1 if failed else 0
        expected = "open" if in_a_row >= threshold else "closed"
        assert failover.state.value == expected
        if expected == "open":
            break


async def test_a_frozen_server_opens_the_circuit_after_one_silent_timeout(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    storage = RedisStorage(own_redis.url, socket_timeout=0.3, connect_timeout=0.3)
    limiter = RateLimiter(CONFIG, storage, failure_window=0.2)
    failover = limiter.storage
    assert isinstance(failover, FailoverStorage)
    assert (await limiter.hit("zoe")).allowed
    assert failover.peers is not None
    await wait_until(lambda: failover.peers is not None and failover.peers.count == 1)
    caplog.set_level(logging.WARNING, logger="sergas_guard.ratelimit.stores.failover")
    own_redis.pause()
    try:
        results = await asyncio.gather(*(limiter.hit("zoe") for _ in range(20)))
        assert failover.state == "open"
        later = await limiter.hit("zoe")  # skipped: no timeout paid
    finally:
        own_redis.resume()
    assert all(type(r) is FallbackResult for r in [*results, later])
    metrics = failover.get_metrics()
    assert metrics["open_reason"].startswith("no reply for 0.")
    assert metrics["skipped"] >= 1
    (line,) = [r.getMessage() for r in caplog.records if "failing" in r.getMessage()]
    assert "failing: no reply for 0." in line
    assert "fallback at 1/1 of each limit (1 process)" in line
    await limiter.aclose()
