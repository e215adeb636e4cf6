"""RateLimiter: the documented API, several limits, costs, metrics, bad input."""

from __future__ import annotations

import pytest

from sergas_guard import ConfigurationError, RateLimitExceeded
from sergas_guard.clock import ManualClock
from sergas_guard.ratelimit import (
    RateLimitConfig,
    RateLimiter,
    RateLimitResult,
    RateLimitStrategy,
)
from sergas_guard.storage import MemoryStorage


def limiter(rate: str | RateLimitConfig, clock: ManualClock, **kwargs: object) -> RateLimiter:
    return RateLimiter(rate, MemoryStorage(clock=clock), **kwargs)  # type: ignore[arg-type]


async def test_the_documented_example_works_as_written() -> None:
    config = RateLimitConfig(
        name="api_rate_limiter",
        max_requests=100,
        window_seconds=60,
        strategy=RateLimitStrategy.SLIDING_WINDOW,
    )
    rate_limiter = RateLimiter(config)
    is_allowed, retry_after = await rate_limiter.allow_request(cost=1)
    assert (is_allowed, retry_after) == (True, 0.0)
    result = await rate_limiter.hit("user:42", cost=1)
    assert isinstance(result, RateLimitResult)
    assert (result.allowed, result.limit, result.remaining) == (True, 100, 99)
    metrics = rate_limiter.get_metrics()
    assert set(metrics) == {
        "name",
        "strategy",
        "max_requests",
        "window_seconds",
        "current_requests",
        "utilization_percent",
        "requests_per_second",
    }
    assert metrics["name"] == "api_rate_limiter"
    assert metrics["strategy"] == "sliding_window"
    assert metrics["current_requests"] == 2


async def test_allow_request_reports_the_wait() -> None:
    clock = ManualClock(1_700_000_000.5)
    rl = limiter(RateLimitConfig(max_requests=2, window_seconds=1, strategy="fixed_window"), clock)
    assert (await rl.allow_request())[0]
    assert (await rl.allow_request())[0]
    allowed, retry_after = await rl.allow_request()
    assert not allowed
    assert retry_after == pytest.approx(0.5)
    clock.advance(retry_after)
    assert (await rl.allow_request())[0]


async def test_keys_are_independent() -> None:
    rl = limiter("1/minute", ManualClock())
    assert (await rl.hit("alice")).allowed
    assert not (await rl.hit("alice")).allowed
    assert (await rl.hit("bob")).allowed


async def test_every_limit_of_a_rate_string_applies_and_rejection_consumes_none() -> None:
    clock = ManualClock(1_700_000_000.0)
    rl = limiter("2/second; 3/minute", clock, strategy="fixed_window")
    assert [(await rl.hit("k")).allowed for _ in range(3)] == [True, True, False]
    decision = await rl.decide("k")
    assert not decision.allowed
    assert decision.spec.limit == 2  # the per-second limit governs
    clock.advance(1)
    assert (await rl.hit("k")).allowed  # third of the minute
    # The minute is now spent: rejected by the minute limit, and the second limit
    # must not have been charged for it.
    clock.advance(1)
    rejected = await rl.decide("k")
    assert not rejected.allowed
    assert rejected.spec.limit == 3
    per_second = rejected.results[0]
    assert per_second.allowed
    assert per_second.remaining == 2
    assert rejected.result.retry_after == pytest.approx(60 - 1_700_000_002 % 60)


async def test_costs_weigh_requests() -> None:
    rl = limiter("10/minute", ManualClock(), strategy="sliding_log")
    assert (await rl.hit("k", cost=7)).remaining == 3
    rejected = await rl.hit("k", cost=4)
    assert not rejected.allowed
    assert (await rl.hit("k", cost=3)).remaining == 0


async def test_peek_changes_nothing() -> None:
    rl = limiter("3/minute", ManualClock(), strategy="token_bucket")
    await rl.hit("k")
    before = await rl.peek("k")
    assert before == await rl.peek("k")
    assert before.remaining == 2
    assert (await rl.hit("k")).remaining == 1


async def test_reset_forgets_a_key() -> None:
    rl = limiter("1/hour", ManualClock())
    await rl.hit("k")
    assert not (await rl.hit("k")).allowed
    await rl.reset("k")
    assert (await rl.hit("k")).allowed


async def test_acquire_raises_rate_limit_exceeded_with_details() -> None:
    rl = limiter("1/minute", ManualClock(1_700_000_000.0), strategy="fixed_window", name="login")
    await rl.acquire("10.0.0.1")
    with pytest.raises(RateLimitExceeded) as caught:
        await rl.acquire("10.0.0.1")
    error = caught.value
    assert error.key == "10.0.0.1"
    assert error.retry_after == pytest.approx(40.0)
    assert error.retry_after_seconds == 40
    assert "1 per 60s" in error.limit


def test_sync_face_shares_state_with_async_face() -> None:
    import asyncio

    rl = limiter("2/minute", ManualClock())
    assert rl.hit_sync("k").allowed
    assert asyncio.run(rl.hit("k")).allowed
    assert not rl.allow_request_sync(key="k")[0]
    assert rl.peek_sync("k").remaining == 0
    rl.reset_sync("k")
    assert rl.acquire_sync("k").remaining == 1


@pytest.mark.parametrize("cost", [-1, 1.5, "2", True])
async def test_bad_costs_are_configuration_errors(cost: object) -> None:
    rl = limiter("5/minute", ManualClock())
    with pytest.raises(ConfigurationError) as caught:
        await rl.hit("k", cost=cost)  # type: ignore[arg-type]
    assert caught.value.field == "cost"


async def test_a_cost_the_limit_can_never_hold_is_refused() -> None:
    rl = limiter("5/minute", ManualClock())
    with pytest.raises(ConfigurationError, match="cost 6 exceeds"):
        await rl.hit("k", cost=6)
    bucket = limiter("100/minute", ManualClock(), strategy="leaky_bucket")
    with pytest.raises(ConfigurationError, match="can ever admit at once"):
        await bucket.hit("k", cost=2)


def test_metrics_follow_admissions_and_slide_out() -> None:
    clock = ManualClock(1_700_000_000.0)
    rl = limiter(
        RateLimitConfig(max_requests=10, window_seconds=10, strategy="fixed_window"), clock
    )
    for _ in range(12):
        rl.hit_sync("k")
    metrics = rl.get_metrics()
    assert metrics["current_requests"] == 10
    assert metrics["utilization_percent"] == 100.0
    assert metrics["requests_per_second"] == 1.0
    detailed = rl.get_metrics(detailed=True)
    assert (detailed["admitted"], detailed["rejected"]) == (10, 2)
    clock.advance(25)
    assert rl.get_metrics()["current_requests"] == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_requests": 0, "window_seconds": 1}, "max_requests"),
        ({"max_requests": 5, "window_seconds": -1}, "window_seconds"),
        ({"max_requests": 5, "window_seconds": 1, "strategy": "fastest"}, "strategy"),
        ({"rate": "lots per day"}, "rate"),
        ({"max_requests": 5, "window_seconds": 1, "burst": 2}, "burst"),
        ({"window_seconds": 1}, "max_requests"),
        ({"max_requests": 5, "window_seconds": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_configuration_names_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RateLimitConfig(**options)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_config_from_a_mapping_and_rate_strings() -> None:
    config = RateLimitConfig.validate_mapping(
        {"name": "batch", "max_requests": 10, "window_seconds": 60, "strategy": "token_bucket"}
    )
    assert config.strategy is RateLimitStrategy.TOKEN_BUCKET
    specs = RateLimitConfig(rate="10 per second; 1000/hour").specs()
    assert [(s.limit, s.window_us) for s in specs] == [(10, 1_000_000), (1000, 3_600_000_000)]
    with pytest.raises(ConfigurationError, match="belong in the RateLimitConfig"):
        RateLimiter(config, name="other")


def test_keys_carry_the_identity_as_a_cluster_hash_tag() -> None:
    rl = RateLimiter("1/second; 5/minute", name="api")
    keys = [check.key for check in rl.checks("user:7")]
    assert all("{user:7}" in key for key in keys)
    assert len(set(keys)) == 2


def test_remembered_storage_keys_are_bounded_and_always_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sergas_guard.ratelimit.limiter as limiter_module

    monkeypatch.setattr(limiter_module, "CHECKS_CACHE", 8)
    rl = RateLimiter("2/minute; 5/hour", name="bounded")
    for i in range(50):
        checks = rl.checks(f"user:{i % 13}")
        assert [check.key for check in checks] == [
            f"{rl.config.key_prefix}:bounded:{{user:{i % 13}}}:{spec.slug}" for spec in rl.specs
        ]
        assert len(rl._checks) <= 8
    # Identities forgotten by the memory keep their state in the storage.
    assert rl.hit_sync("user:0").remaining == 1
    for i in range(1, 13):
        rl.checks(f"user:{i}")
    assert rl.hit_sync("user:0").remaining == 0
