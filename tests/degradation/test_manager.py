"""DegradationManager: the original documentation's calls, levels, fallbacks, breakers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sergas_guard.circuit_breaker import CircuitBreakerConfig, CircuitBreakerManager
from sergas_guard.clock import ManualClock
from sergas_guard.degradation import (
    CachedFallback,
    DegradationLevel,
    DegradationManager,
    FeatureFlags,
    LevelChange,
    ServiceFallback,
    StaticFallback,
    last_fallback,
)
from sergas_guard.errors import CircuitOpenError, ConfigurationError, FeatureDisabledError


async def test_the_original_documentation_example_runs_as_written() -> None:
    outage = False

    async def call_external_api(user_id: str) -> dict[str, Any]:
        if outage:
            raise ConnectionError("external API down")
        return {"user": user_id, "items": [1, 2, 3]}

    # -- from the documentation, unchanged --
    manager = DegradationManager()

    manager.feature_flags.register(
        "recommendations",
        enabled=True,
        description="Product recommendations",
        rollout_percentage=100.0,
    )

    cached_fallback = CachedFallback(name="api_cache", cache_ttl=300)
    manager.register_fallback("external_api", cached_fallback)

    result = await manager.execute_with_fallback(
        "external_api",
        primary_func=call_external_api,
        fallback_strategy="api_cache",
        user_id="123",
    )
    # -- end --
    assert result == {"user": "123", "items": [1, 2, 3]}

    outage = True
    again = await manager.execute_with_fallback(
        "external_api",
        primary_func=call_external_api,
        fallback_strategy="api_cache",
        user_id="123",
    )
    assert again == result
    assert last_fallback() is not None
    assert last_fallback().strategy == "api_cache"  # type: ignore[union-attr]

    # Feature flag example, as written.
    if manager.feature_flags.is_enabled("recommendations", user_id="user123"):
        recommendations = ["shown"]
    else:
        recommendations = []
    assert recommendations == ["shown"]
    manager.feature_flags.set_rollout_percentage("new_feature", 25.0)  # 25% of users
    enabled = sum(manager.feature_flags.is_enabled("new_feature", f"u{i}") for i in range(4000))
    assert 800 < enabled < 1200

    manager.set_degradation_level(DegradationLevel.DEGRADED)
    assert not manager.feature_flags.is_enabled("recommendations", user_id="user123")


async def test_the_circuit_breaker_integration_example_runs_as_written() -> None:
    calls = 0

    async def call_api() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    cb_manager = CircuitBreakerManager(
        CircuitBreakerConfig(window_size=2, minimum_calls=2, wait_duration_in_open=60)
    )
    degradation = DegradationManager(circuit_breaker_manager=cb_manager)
    degradation.register_fallback("external_api", StaticFallback("cached", "from cache"))

    for _ in range(4):
        result = await degradation.execute_with_fallback(
            "external_api",
            primary_func=call_api,
            fallback_strategy="cached",
        )
        assert result == "from cache"
    assert calls == 2  # the breaker of "external_api" opened and kept the API from load
    assert cb_manager.get_or_create("external_api").state.name == "OPEN"


async def test_an_open_breaker_without_a_fallback_raises_circuit_open() -> None:
    cb_manager = CircuitBreakerManager()
    cb_manager.get_or_create("payments").transition_to_forced_open()
    manager = DegradationManager(circuit_breaker_manager=cb_manager)

    async def pay() -> str:
        return "paid"

    with pytest.raises(CircuitOpenError):
        await manager.execute_with_fallback("payments", primary_func=pay)


async def test_extra_keyword_arguments_reach_the_primary() -> None:
    manager = DegradationManager()
    seen: dict[str, Any] = {}

    async def search(query: str, *, limit: int) -> list[str]:
        seen.update(query=query, limit=limit)
        return [query] * limit

    # search() takes no user_id: it is used for caching but not passed on.
    result = await manager.execute_with_fallback(
        "search", primary_func=search, query="shoes", limit=2, user_id="7"
    )
    assert result == ["shoes", "shoes"]
    assert seen == {"query": "shoes", "limit": 2}

    def profile(user_id: str, verbose: bool = False) -> str:
        return f"{user_id}:{verbose}"

    assert (
        manager.execute_with_fallback_sync("profile", profile, None, user_id="9", verbose=True)
        == "9:True"
    )


async def test_cached_answers_are_per_user() -> None:
    manager = DegradationManager()
    manager.register_fallback("profile", CachedFallback("cache"))
    outage = False

    async def profile(user_id: str) -> str:
        if outage:
            raise TimeoutError
        return f"profile of {user_id}"

    await manager.execute_with_fallback("profile", profile, user_id="alice")
    outage = True
    assert await manager.execute_with_fallback("profile", profile, user_id="alice") == (
        "profile of alice"
    )
    with pytest.raises(TimeoutError):
        await manager.execute_with_fallback("profile", profile, user_id="bob")


async def test_registered_fallbacks_chain_in_order() -> None:
    manager = DegradationManager()
    manager.register_fallback("feed", CachedFallback("cache"))
    manager.register_fallback("feed", ServiceFallback("mirror", lambda: "mirror feed"))
    manager.register_fallback("feed", StaticFallback("empty", []))

    async def feed() -> str:
        raise ConnectionError

    assert await manager.execute_with_fallback("feed", feed) == "mirror feed"
    assert await manager.execute_with_fallback("feed", feed, "empty") == []
    with pytest.raises(ConfigurationError, match="already has a fallback"):
        manager.register_fallback("feed", StaticFallback("empty", None))
    with pytest.raises(ConfigurationError):
        manager.register_fallback("feed", object())  # type: ignore[arg-type]


async def test_an_unknown_fallback_name_is_logged_and_the_error_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = DegradationManager()

    async def fails() -> str:
        raise ConnectionError("down")

    with caplog.at_level(logging.ERROR), pytest.raises(ConnectionError):
        await manager.execute_with_fallback("svc", fails, fallback_strategy="nope")
    assert "no fallback named 'nope'" in caplog.text


async def test_critical_serves_fresh_cache_without_calling_the_primary(clock: ManualClock) -> None:
    manager = DegradationManager(clock=clock)
    manager.register_fallback("api", CachedFallback("cache", cache_ttl=60, clock=clock))
    calls = 0

    async def api() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await manager.execute_with_fallback("api", api) == 1
    manager.set_degradation_level(DegradationLevel.CRITICAL)
    assert await manager.execute_with_fallback("api", api) == 1
    assert calls == 1
    clock.advance(61)  # the cached answer is no longer fresh: call the primary
    assert await manager.execute_with_fallback("api", api) == 2


async def test_maintenance_never_calls_the_primary() -> None:
    manager = DegradationManager()
    manager.register_fallback("api", StaticFallback("static", "maintenance page"))
    called = False

    def api() -> str:
        nonlocal called
        called = True
        return "live"

    manager.set_degradation_level("maintenance")
    assert await manager.execute_with_fallback("api", api) == "maintenance page"
    assert manager.execute_with_fallback_sync("api", api) == "maintenance page"
    with pytest.raises(FeatureDisabledError, match="maintenance"):
        await manager.execute_with_fallback("other", api)
    assert not called


def test_the_sync_face_refuses_async_primaries() -> None:
    async def primary() -> None: ...

    with pytest.raises(ConfigurationError):
        DegradationManager().execute_with_fallback_sync("svc", primary)


def test_levels_turn_non_essential_flags_off_and_back_on() -> None:
    manager = DegradationManager()
    flags = manager.feature_flags
    flags.register("recommendations")
    flags.register("checkout", essential=True)
    for level in (DegradationLevel.DEGRADED, DegradationLevel.CRITICAL, "maintenance"):
        manager.set_degradation_level(level)
        assert not flags.is_enabled("recommendations")
        assert flags.is_enabled("checkout")
        assert [s.suppressed for s in flags.list_flags()] == [False, True]
    manager.set_degradation_level(DegradationLevel.NORMAL)
    assert flags.is_enabled("recommendations")


def test_level_changes_are_events_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    manager = DegradationManager()
    events: list[LevelChange] = []
    manager.add_listener(events.append)
    with caplog.at_level(logging.INFO, logger="sergas_guard.degradation"):
        manager.set_degradation_level(DegradationLevel.DEGRADED, reason="deploy")
        manager.set_degradation_level(DegradationLevel.DEGRADED)  # no change, no event
        manager.set_degradation_level(DegradationLevel.NORMAL)
    assert [(e.old, e.new, e.source, e.reason) for e in events] == [
        (DegradationLevel.NORMAL, DegradationLevel.DEGRADED, "manual", "deploy"),
        (DegradationLevel.DEGRADED, DegradationLevel.NORMAL, "manual", "set by operator"),
    ]
    lines = [r.getMessage() for r in caplog.records if "degradation level" in r.getMessage()]
    assert lines == [
        "degradation level normal -> degraded (manual: deploy)",
        "degradation level degraded -> normal (manual: set by operator)",
    ]


def test_a_failing_listener_does_not_stop_the_change() -> None:
    manager = DegradationManager()
    events: list[LevelChange] = []

    def broken(change: LevelChange) -> None:
        raise RuntimeError("listener bug")

    manager.add_listener(broken)
    manager.add_listener(events.append)
    manager.set_degradation_level("critical")
    assert manager.level is DegradationLevel.CRITICAL
    assert len(events) == 1


def test_bad_levels_and_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown degradation level"):
        DegradationManager().set_degradation_level("panic")
    with pytest.raises(ConfigurationError) as info:
        DegradationManager(auto_degrade_threshold=1.5)
    assert info.value.field == "auto_degrade_threshold"
    with pytest.raises(ConfigurationError):
        DegradationManager(auto_degrade_threshold=0.9, critical_threshold=0.5)
    with pytest.raises(ConfigurationError):
        DegradationManager(circuit_breaker_manager=object())
    with pytest.raises(ConfigurationError, match="not both"):
        DegradationManager(feature_flags=FeatureFlags(), feature_flags_path="/tmp/f.json")


def test_built_from_the_original_configuration(tmp_path: Any) -> None:
    degradation_config = {
        "auto_degrade_threshold": 0.85,  # Auto-degrade at 85% capacity
        "feature_flags_path": str(tmp_path / "feature_flags.json"),
    }
    manager = DegradationManager.from_config(degradation_config)
    assert manager.config.auto_degrade_threshold == 0.85
    manager.feature_flags.register("search")
    assert (tmp_path / "feature_flags.json").exists()
    with pytest.raises(ConfigurationError, match="auto_degrade_treshold"):
        DegradationManager.from_config({"auto_degrade_treshold": 0.8})


def test_a_given_feature_flags_is_used() -> None:
    flags = FeatureFlags()
    manager = DegradationManager(feature_flags=flags)
    assert manager.feature_flags is flags
    flags.register("x")
    manager.set_degradation_level(DegradationLevel.DEGRADED)
    assert not manager.is_feature_enabled("x")


async def test_a_flag_named_like_the_service_switches_its_calls_to_the_fallback() -> None:
    manager = DegradationManager()
    manager.feature_flags.register("recommendations")  # not essential
    manager.register_fallback("recommendations", StaticFallback("popular", ["bestsellers"]))
    calls = 0

    async def personalised(user_id: str) -> list[str]:
        nonlocal calls
        calls += 1
        return [f"for {user_id}"]

    assert await manager.execute_with_fallback("recommendations", personalised, user_id="u") == [
        "for u"
    ]
    manager.set_degradation_level(DegradationLevel.DEGRADED)
    assert await manager.execute_with_fallback("recommendations", personalised, user_id="u") == [
        "bestsellers"
    ]
    assert calls == 1  # switched off: the primary was not called
    manager.set_degradation_level(DegradationLevel.NORMAL)

    # Without a fallback, a call the flag turns off is refused with the flag's reason.
    manager.feature_flags.register("beta_api", deny_users=["u"])
    with pytest.raises(FeatureDisabledError, match="denied"):
        await manager.execute_with_fallback("beta_api", personalised, user_id="u")
    assert calls == 1
