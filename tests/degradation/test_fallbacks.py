"""Fallback strategies and @with_fallback, sync and async, chained, with a real breaker."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from sergas_guard.clock import ManualClock
from sergas_guard.degradation import (
    CachedFallback,
    FallbackContext,
    FallbackMiss,
    FallbackStrategy,
    ServiceFallback,
    StaticFallback,
    last_fallback,
    with_fallback,
)
from sergas_guard.errors import CircuitOpenError, ConfigurationError


class Flaky:
    """A dependency that answers until told to fail."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def __call__(self, item: str) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("dependency down")
        return f"live {item} #{self.calls}"


def test_strategies_satisfy_the_protocol() -> None:
    for strategy in (
        CachedFallback("c"),
        StaticFallback("s", []),
        ServiceFallback("f", lambda: 1),
    ):
        assert isinstance(strategy, FallbackStrategy)


def test_cached_fallback_serves_the_last_good_result_per_call(clock: ManualClock) -> None:
    cache = CachedFallback("cache", cache_ttl=60, clock=clock)
    dependency = Flaky()
    fetch = with_fallback(cache)(dependency)

    assert fetch("a") == "live a #1"
    assert last_fallback() is None
    assert fetch("b") == "live b #2"
    dependency.down = True
    clock.advance(10)
    assert fetch("a") == "live a #1"  # per call key: "a" gets a's answer, not b's
    info = last_fallback()
    assert info is not None
    assert (info.strategy, info.stale, info.error) == ("cache", False, "ConnectionError")
    assert info.age == pytest.approx(10)
    with pytest.raises(ConnectionError):
        fetch("never-seen")  # nothing cached: the primary's own error


def test_cached_answers_older_than_the_ttl_are_reported_stale(clock: ManualClock) -> None:
    cache = CachedFallback("cache", cache_ttl=60, max_stale=100, clock=clock)
    dependency = Flaky()
    fetch = with_fallback(cache)(dependency)
    fetch("a")
    dependency.down = True
    clock.advance(61)
    assert fetch("a") == "live a #1"
    info = last_fallback()
    assert info is not None
    assert info.stale
    clock.advance(100)  # past ttl + max_stale: too old to serve
    with pytest.raises(ConnectionError):
        fetch("a")
    assert len(cache) == 0


def test_cache_entries_are_bounded(clock: ManualClock) -> None:
    cache = CachedFallback("cache", max_entries=3, clock=clock)
    fetch = with_fallback(cache)(Flaky())
    for item in "abcde":
        fetch(item)
    assert len(cache) == 3
    assert cache.lookup(FallbackContext("Flaky", ("a",))) is None  # the oldest were dropped
    assert cache.lookup(FallbackContext("Flaky", ("e",))) is not None


@given(st.lists(st.integers(0, 20), max_size=200), st.integers(1, 8))
def test_cache_never_holds_more_than_max_entries(keys: list[int], bound: int) -> None:
    cache = CachedFallback("cache", max_entries=bound, clock=ManualClock())
    for key in keys:
        cache.remember(FallbackContext("svc", (key,)), key)
        assert len(cache) <= bound
    # The most recent distinct keys are the ones kept.
    recent: list[int] = []
    for key in reversed(keys):
        if key not in recent:
            recent.append(key)
    for key in recent[:bound]:
        answer = cache.lookup(FallbackContext("svc", (key,)))
        assert answer is not None
        assert answer.value == key


def test_cached_answers_are_kept_apart_per_user(clock: ManualClock) -> None:
    cache = CachedFallback("cache", clock=clock)
    cache.remember(FallbackContext("svc", (), {}, None, "alice"), "alice's data")
    assert cache.lookup(FallbackContext("svc", (), {}, None, "bob")) is None


def test_key_func_chooses_what_identifies_a_call(clock: ManualClock) -> None:
    cache = CachedFallback("cache", key_func=lambda item, **_: item.lower(), clock=clock)
    dependency = Flaky()
    fetch = with_fallback(cache)(dependency)
    fetch("A")
    dependency.down = True
    assert fetch("a") == "live A #1"


def test_static_fallback_value_and_factory() -> None:
    made: list[int] = []

    def factory() -> list[int]:
        made.append(1)
        return []

    def broken(item: str) -> object:
        raise ConnectionError("down")

    assert with_fallback(StaticFallback("empty", ["cached"]))(broken)("x") == ["cached"]
    fresh = with_fallback(StaticFallback("fresh", factory=factory))(broken)
    first, second = fresh("x"), fresh("y")
    assert first == second == []
    assert first is not second  # a new object each time
    assert made == [1, 1]
    positional = with_fallback(StaticFallback("positional", factory))(broken)
    assert positional("z") == []  # a callable value is a factory
    assert made == [1, 1, 1]
    with pytest.raises(ConfigurationError):
        StaticFallback("both", [], factory=list)


def test_service_fallback_calls_the_alternate_with_the_same_arguments() -> None:
    broken = Flaky()
    broken.down = True
    mirror = with_fallback(ServiceFallback("mirror", lambda item: f"mirror {item}"))(broken)
    assert mirror("x") == "mirror x"
    plain_callable = with_fallback(lambda item: f"alt {item}")(broken)
    assert plain_callable("y") == "alt y"


def test_only_the_listed_exceptions_fall_back() -> None:
    @with_fallback(StaticFallback("s", "fallback"), on=ConnectionError)
    def fails_with(exc: Exception) -> str:
        raise exc

    assert fails_with(ConnectionError()) == "fallback"
    with pytest.raises(KeyError):
        fails_with(KeyError("bug"))


def test_fallbacks_chain() -> None:
    # The mirror fails too; the cache has nothing; the static default answers.
    def mirror(item: str) -> str:
        raise TimeoutError("mirror down")

    broken = Flaky()
    broken.down = True

    @with_fallback(StaticFallback("default", "default"))
    @with_fallback(ServiceFallback("mirror", mirror))
    @with_fallback(CachedFallback("cache"))
    def fetch(item: str) -> str:
        return broken(item)

    assert fetch("x") == "default"
    assert last_fallback() is not None
    assert last_fallback().strategy == "default"  # type: ignore[union-attr]


async def test_async_functions_keep_their_nature_and_fall_back() -> None:
    cache = CachedFallback("cache")
    down = False

    @with_fallback(cache)
    async def fetch(item: str) -> str:
        await asyncio.sleep(0)
        if down:
            raise ConnectionError("down")
        return f"live {item}"

    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert await fetch("a") == "live a"
    down = True
    assert await fetch("a") == "live a"
    assert last_fallback() is not None

    async def alternate(item: str) -> str:
        return f"alt {item}"

    @with_fallback(alternate)
    async def broken(item: str) -> str:
        raise ConnectionError("down")

    assert await broken("b") == "alt b"


def test_an_async_alternate_cannot_serve_a_sync_call() -> None:
    async def alternate(item: str) -> str:
        return item

    @with_fallback(ServiceFallback("alt", alternate))
    def broken(item: str) -> str:
        raise ConnectionError("down")

    # The alternate is skipped (and logged) and the primary's error surfaces.
    with pytest.raises(ConnectionError):
        broken("x")


def test_cancellation_is_not_swallowed() -> None:
    @with_fallback(StaticFallback("s", "fallback"))
    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()


def test_bad_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        with_fallback(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        with_fallback(StaticFallback("s"), on=("nope",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CachedFallback("c", cache_ttl=0)
    with pytest.raises(ConfigurationError):
        CachedFallback("")
    with pytest.raises(ConfigurationError):
        with_fallback(StaticFallback("s"), circuit_breaker=object())(lambda: 1)


def test_a_miss_with_no_primary_error_is_a_fallback_miss() -> None:
    with pytest.raises(FallbackMiss, match="nothing cached"):
        CachedFallback("c").serve_sync(FallbackContext("svc"))


# -- with the real circuit breaker ------------------------------------------------------
def opening_breaker(clock: ManualClock) -> CircuitBreaker:
    config = CircuitBreakerConfig(window_size=2, minimum_calls=2, wait_duration_in_open=30)
    return CircuitBreaker("dependency", config, clock=clock)


def test_an_open_breaker_is_answered_by_the_fallback(clock: ManualClock) -> None:
    breaker = opening_breaker(clock)
    dependency = Flaky()
    fetch = with_fallback(CachedFallback("cache", clock=clock), circuit_breaker=breaker)(dependency)
    assert fetch("a") == "live a #1"
    dependency.down = True
    assert fetch("a") == "live a #1"
    assert fetch("a") == "live a #1"
    assert breaker.state.name == "OPEN"
    calls = dependency.calls
    assert fetch("a") == "live a #1"  # refused by the breaker, answered by the cache
    assert dependency.calls == calls  # the dependency was not called
    with pytest.raises(CircuitOpenError):
        fetch("b")  # nothing cached for b: the breaker's refusal surfaces


async def test_async_calls_go_through_the_breaker(clock: ManualClock) -> None:
    breaker = opening_breaker(clock)
    attempts: list[Any] = []

    @with_fallback(StaticFallback("s", "static"), circuit_breaker=breaker)
    async def fetch() -> str:
        attempts.append(1)
        raise ConnectionError("down")

    for _ in range(4):
        assert await fetch() == "static"
    assert len(attempts) == 2  # the breaker opened after two failures
