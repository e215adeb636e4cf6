"""The automatic mode: signals from real limiters, breakers and health checks, hysteresis."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.circuit_breaker import CircuitBreakerManager
from sergas_guard.clock import ManualClock
from sergas_guard.degradation import DegradationLevel, DegradationManager, LevelChange
from sergas_guard.degradation.auto import (
    AutoState,
    level_for_breakers,
    level_for_health,
    level_for_utilization,
    step,
)
from sergas_guard.errors import ConfigurationError
from sergas_guard.health import HealthCheckRegistry, ServiceHealthCheck
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy

NORMAL, DEGRADED, CRITICAL = (
    DegradationLevel.NORMAL,
    DegradationLevel.DEGRADED,
    DegradationLevel.CRITICAL,
)

observations = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=50, allow_nan=False),
        st.sampled_from([NORMAL, DEGRADED, CRITICAL]),
    ),
    max_size=60,
)


@given(observations, st.floats(min_value=0.5, max_value=30))
def test_hysteresis_invariants(steps: list[tuple[float, DegradationLevel]], hold: float) -> None:
    state, now = AutoState(), 0.0
    history: list[tuple[float, DegradationLevel]] = []
    last_drop: float | None = None
    for dt, target in steps:
        now += dt
        before = state.level
        state = step(state, target, now, hold)
        history.append((now, target))
        # Never below what the signals ask for right now: up at once.
        assert state.level >= target
        if state.level < before:
            # Down only when every target for a whole hold period stayed below the old level...
            high = [i for i, (_, lvl) in enumerate(history) if lvl >= before]
            calm = history[high[-1] + 1 if high else 0 :]
            assert now - calm[0][0] >= hold
            # ...and only to a level that was still asked for in that period.
            assert state.level == max(lvl for _, lvl in calm)
            # No flapping: two steps down are at least a hold period apart.
            if last_drop is not None:
                assert now - last_drop >= hold
            last_drop = now


def test_signal_rules() -> None:
    assert level_for_utilization(0.84, 0.85, 0.95) is NORMAL
    assert level_for_utilization(0.85, 0.85, 0.95) is DEGRADED
    assert level_for_utilization(0.97, 0.85, 0.95) is CRITICAL
    assert level_for_breakers(0, 4) is NORMAL
    assert level_for_breakers(1, 4) is DEGRADED
    assert level_for_breakers(2, 4) is CRITICAL
    assert level_for_breakers(1, 1) is CRITICAL
    assert level_for_health("healthy") is NORMAL
    assert level_for_health("DEGRADED") is DEGRADED
    assert level_for_health("fail") is CRITICAL
    with pytest.raises(ValueError, match="unknown health status"):
        level_for_health("sideways")


def busy_limiter(clock: ManualClock) -> RateLimiter:
    config = RateLimitConfig(
        name="api", max_requests=100, window_seconds=60, strategy=RateLimitStrategy.SLIDING_WINDOW
    )
    return RateLimiter(config, clock=clock)


def test_a_busy_limiter_degrades_and_recovery_waits_for_the_hold_time(clock: ManualClock) -> None:
    limiter = busy_limiter(clock)
    manager = DegradationManager(clock=clock, hold_seconds=60, evaluation_interval=0)
    manager.feature_flags.register("recommendations")
    manager.feature_flags.register("checkout", essential=True)
    manager.add_signal(limiter)
    events: list[LevelChange] = []
    manager.add_listener(events.append)

    for _ in range(50):
        limiter.hit_sync()
    assert manager.level is NORMAL
    for _ in range(40):
        limiter.hit_sync()  # 90 of 100: above the 0.85 threshold
    assert manager.level is DEGRADED
    assert not manager.feature_flags.is_enabled("recommendations")
    assert manager.feature_flags.is_enabled("checkout")
    assert events[-1].source == "auto"
    assert "api: utilisation 90%" in events[-1].reason

    clock.advance(61)  # the window empties: load is gone
    assert manager.level is DEGRADED  # but the level holds
    clock.advance(59)
    assert manager.level is DEGRADED
    clock.advance(1)
    assert manager.level is NORMAL
    assert manager.feature_flags.is_enabled("recommendations")
    assert [(e.old, e.new) for e in events] == [(NORMAL, DEGRADED), (DEGRADED, NORMAL)]


def test_signals_are_read_at_most_once_per_interval(clock: ManualClock) -> None:
    readings = []

    def load() -> float:
        readings.append(1)
        return 0.1

    manager = DegradationManager(clock=clock, evaluation_interval=1.0)
    manager.add_signal(load, name="load")
    for _ in range(10):
        _ = manager.level
    assert len(readings) == 1
    clock.advance(1)
    _ = manager.level
    assert len(readings) == 2


def test_open_breakers_degrade(clock: ManualClock) -> None:
    breakers = CircuitBreakerManager(clock=clock)
    for name in ("payments", "search", "email", "avatars"):
        breakers.get_or_create(name)
    manager = DegradationManager(
        circuit_breaker_manager=breakers, clock=clock, evaluation_interval=0, hold_seconds=10
    )
    manager.add_signal(breakers)
    assert manager.level is NORMAL
    breakers.get_or_create("avatars").transition_to_forced_open()
    assert manager.level is DEGRADED
    assert "1/4 breakers open (avatars)" in manager.readings[0].detail
    breakers.get_or_create("search").transition_to_open()
    assert manager.level is CRITICAL  # half of them open
    breakers.reset_all()
    assert manager.level is CRITICAL  # held: calm is timed from the first calm reading
    clock.advance(10)
    assert manager.level is NORMAL


async def test_a_health_registry_is_checked_by_the_async_evaluation(clock: ManualClock) -> None:
    healthy = {"db": True}
    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0)
    registry.register(ServiceHealthCheck("db", lambda: healthy["db"]))
    manager = DegradationManager(clock=clock, evaluation_interval=0, hold_seconds=5)
    manager.add_signal(registry, name="health")
    assert await manager.evaluate_async() is NORMAL
    healthy["db"] = False
    assert await manager.evaluate_async() is CRITICAL
    assert manager.evaluate() is CRITICAL  # the sync path uses the last summary
    healthy["db"] = True
    assert await manager.evaluate_async() is CRITICAL  # held for hold_seconds
    clock.advance(5)
    assert await manager.evaluate_async() is NORMAL


async def test_async_callables_are_signals(clock: ManualClock) -> None:
    status = "degraded"

    async def health() -> str:
        return status

    manager = DegradationManager(clock=clock, evaluation_interval=0, hold_seconds=0)
    manager.add_signal(health, kind="health")
    assert await manager.evaluate_async() is DEGRADED
    with pytest.raises(ConfigurationError, match="async"):
        manager.add_signal(health, kind="health").read()


def test_the_operator_level_is_a_floor(clock: ManualClock) -> None:
    load = {"value": 0.0}
    manager = DegradationManager(clock=clock, evaluation_interval=0, hold_seconds=0)
    manager.add_signal(lambda: load["value"], name="queue")
    manager.set_degradation_level(DEGRADED)
    assert manager.level is DEGRADED
    load["value"] = 0.99
    assert manager.level is CRITICAL
    load["value"] = 0.0
    clock.advance(1)
    assert manager.level is DEGRADED  # back to the operator's level, not below
    assert manager.auto_level is NORMAL


def test_a_broken_signal_is_skipped_and_logged(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> float:
        raise RuntimeError("metrics endpoint down")

    manager = DegradationManager(clock=clock, evaluation_interval=0)
    manager.add_signal(broken, name="broken")
    with caplog.at_level(logging.WARNING):
        assert manager.level is NORMAL
    assert "metrics endpoint down" in caplog.text


def test_unrecognised_sources_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot tell"):
        DegradationManager().add_signal(42)


async def test_run_auto_follows_the_signals_on_the_event_loop() -> None:
    load = {"value": 0.9}
    manager = DegradationManager(evaluation_interval=0.01, hold_seconds=0)
    manager.add_signal(lambda: load["value"], name="queue")
    changed = asyncio.Event()
    manager.add_listener(lambda change: changed.set())
    task = asyncio.create_task(manager.run_auto())
    try:
        await asyncio.wait_for(changed.wait(), timeout=5)
        assert manager.auto_level is DEGRADED
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
