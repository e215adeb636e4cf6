"""The public faces: exports, decorator, context managers, manager, storage choice, config."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import sergas_guard.circuit_breaker as package
from sergas_guard import ConfigurationError
from sergas_guard.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerManager,
    CircuitOpenError,
    CircuitState,
    circuit_breaker,
    default_manager,
)
from sergas_guard.clock import ManualClock
from sergas_guard.config import load_toml
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from tests.circuit_breaker.support import Boom, breaker, config, fail, fail_times, state, succeed


def test_the_contracted_names_are_exported() -> None:
    for name in (
        "CircuitBreaker",
        "CircuitBreakerConfig",
        "CircuitBreakerManager",
        "CircuitState",
        "circuit_breaker",
        "with_retry",
        "CircuitOpenError",
    ):
        assert name in package.__all__
        assert getattr(package, name) is not None
    assert sorted(package.__all__) == package.__all__


def test_the_decorator_keeps_signature_and_kind() -> None:
    manager = CircuitBreakerManager()

    @circuit_breaker("sync-dep", manager=manager)
    def lookup(user_id: int, *, verbose: bool = False) -> dict[str, Any]:
        """Look a user up."""
        return {"id": user_id, "verbose": verbose}

    @circuit_breaker("async-dep", config(), manager)
    async def fetch(url: str) -> str:
        return url

    signature = inspect.signature(lookup)
    assert signature == inspect.signature(lookup.__wrapped__)  # type: ignore[attr-defined]
    assert list(signature.parameters) == ["user_id", "verbose"]
    assert lookup.__doc__ == "Look a user up."
    assert not inspect.iscoroutinefunction(lookup)
    assert inspect.iscoroutinefunction(fetch)
    assert lookup(7, verbose=True) == {"id": 7, "verbose": True}
    assert sorted(manager.names()) == ["async-dep", "sync-dep"]


async def test_decorated_async_functions_run_through_their_breaker() -> None:
    manager = CircuitBreakerManager(config())

    @circuit_breaker("flaky", manager=manager)
    async def flaky() -> None:
        raise Boom("down")

    for _ in range(4):
        with pytest.raises(Boom):
            await flaky()
    with pytest.raises(CircuitOpenError):
        await flaky()
    assert manager.states() == {"flaky": CircuitState.OPEN}


def test_the_default_manager_is_used_when_none_is_given() -> None:
    @circuit_breaker("default-manager-dep")
    def ping() -> str:
        return "pong"

    assert ping() == "pong"
    registered = default_manager().get("default-manager-dep")
    assert registered is not None
    assert registered.get_metrics()["buffered_calls"] == 1


async def test_call_runs_sync_and_async_functions_with_their_arguments() -> None:
    target = breaker()

    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await target.call(add, 1, b=2) == 3
    assert await target.call(lambda a, b: a * b, 3, 4) == 12
    assert target.call_sync(divmod, 7, 2) == (3, 1)
    assert target.get_metrics()["buffered_calls"] == 3


async def test_breaker_as_decorator_and_as_context_managers() -> None:
    target = breaker(window_size=10, minimum_calls=10)

    @target
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    with target:
        pass
    async with target:
        pass
    with pytest.raises(Boom), target:
        fail()
    with pytest.raises(Boom):
        async with target:
            fail()
    metrics = target.get_metrics()
    assert (metrics["buffered_calls"], metrics["failed_calls"]) == (5, 2)


def test_context_managers_nest_across_breakers() -> None:
    outer, inner = breaker(), breaker()
    with pytest.raises(Boom), outer, inner, outer:
        fail()
    assert outer.get_metrics()["failed_calls"] == 2
    assert inner.get_metrics()["failed_calls"] == 1


def test_an_open_context_manager_refuses_before_the_body_runs() -> None:
    target = breaker()
    target.transition_to_forced_open()
    ran = False
    with pytest.raises(CircuitOpenError), target:
        ran = True
    assert not ran


def test_manager_creates_once_with_per_name_or_default_config() -> None:
    special = config(window_size=10, minimum_calls=10)
    manager = CircuitBreakerManager(config(), configs={"special": special})
    first = manager.get_or_create("plain")
    assert manager.get_or_create("plain") is first
    assert first.config == config()
    assert manager.get_or_create("special").config is special
    assert manager.get_or_create("explicit", special).config is special
    assert "plain" in manager
    assert len(manager) == 3
    assert manager.get("missing") is None


def test_manager_refuses_two_configs_for_one_name() -> None:
    manager = CircuitBreakerManager()
    manager.get_or_create("db", config())
    with pytest.raises(ConfigurationError) as error:
        manager.get_or_create("db", config(window_size=8))
    assert error.value.field == "config"
    with pytest.raises(ConfigurationError):
        manager.configure("db", config(window_size=8))
    manager.configure("db", config())  # the same config is fine


def test_manager_lists_states_metrics_and_open_breakers_and_resets_all() -> None:
    manager = CircuitBreakerManager(config(), clock=ManualClock())
    events: list[CircuitBreakerEvent] = []
    manager.add_listener(events.append)
    failing = manager.get_or_create("failing")
    manager.get_or_create("fine").call_sync(succeed)
    fail_times(failing, 4)
    assert manager.states() == {"failing": CircuitState.OPEN, "fine": CircuitState.CLOSED}
    assert manager.open_breakers() == ["failing"]
    metrics = manager.get_all_metrics()
    assert metrics["failing"]["failed_calls"] == 4
    assert metrics["fine"]["buffered_calls"] == 1
    assert any(event.to_state is CircuitState.OPEN for event in events)
    manager.reset_all()
    assert manager.open_breakers() == []
    late = manager.get_or_create("late")
    late.transition_to_forced_open()
    assert events[-1].breaker == "late"  # listeners reach breakers created later too


def test_breakers_given_one_memory_storage_share_state() -> None:
    storage = MemoryStorage(clock=ManualClock())
    first = CircuitBreaker("shared", config(), storage=storage)
    second = CircuitBreaker("shared", config(), storage=storage)
    alone = CircuitBreaker("shared", config(), storage=MemoryStorage())
    fail_times(first, 4)
    assert state(second) is CircuitState.OPEN
    assert state(alone) is CircuitState.CLOSED
    assert first.get_metrics()["storage"] == "memory"


def test_an_unknown_storage_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        CircuitBreaker("x", storage=42)
    assert error.value.field == "storage"
    with pytest.raises(ConfigurationError):
        CircuitBreaker("x", storage="ftp://nowhere")


def test_a_storage_url_is_accepted() -> None:
    assert repr(CircuitBreaker("x", storage="memory://")) == "CircuitBreaker('x', storage=memory)"
    manager = CircuitBreakerManager(storage="redis://127.0.0.1:1/0")
    manager.get_or_create("y")
    assert repr(manager.get("y")) == "CircuitBreaker('y', storage=redis)"


def test_pybreaker_style_shorthands_translate_to_our_fields() -> None:
    translated = CircuitBreakerConfig.validate_mapping(
        {
            "failure_threshold": 3,
            "recovery_timeout": 5,
            "half_open_max_calls": 2,
            "expected_exception": Boom,
        }
    )
    assert (translated.window_size, translated.minimum_calls) == (3, 3)
    assert translated.failure_rate_threshold == 100.0
    assert translated.wait_duration_in_open == 5.0
    assert translated.permitted_calls_in_half_open == 2
    assert translated.record_exceptions == (Boom,)
    target = CircuitBreaker("short", translated)
    fail_times(target, 2)
    target.call_sync(succeed)
    fail_times(target, 2)
    assert state(target) is CircuitState.CLOSED  # 2 of the last 3 failed
    fail_times(target, 1)
    assert state(target) is CircuitState.OPEN  # 3 in a row
    with pytest.raises(ConfigurationError) as error:
        CircuitBreakerConfig.validate_mapping({"recovery_timeout": 5, "wait_duration_in_open": 6})
    assert error.value.field == "recovery_timeout"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"window_size": 0}, "window_size"),
        ({"window_type": "sessions"}, "window_type"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 101}, "failure_rate_threshold"),
        ({"slow_call_rate_threshold": -1}, "slow_call_rate_threshold"),
        ({"wait_duration_in_open": 0}, "wait_duration_in_open"),
        ({"wait_backoff_multiplier": 0.5}, "wait_backoff_multiplier"),
        ({"permitted_calls_in_half_open": 0}, "permitted_calls_in_half_open"),
        ({"record_exceptions": ["no.such.Error"]}, "record_exceptions"),
        ({"ignore_exceptions": [int]}, "ignore_exceptions"),
        ({"window_size": 5, "minimum_calls": 6}, "minimum_calls"),
        (
            {"wait_duration_in_open": 10, "max_wait_duration_in_open": 5},
            "max_wait_duration_in_open",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_config_names_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        CircuitBreakerConfig(**values)
    assert field in str(error.value)


def test_config_loads_from_toml_with_exceptions_by_name(tmp_path: Any) -> None:
    path = tmp_path / "guard.toml"
    path.write_text(
        "[circuit_breaker]\n"
        'window_type = "time"\n'
        "window_size = 30\n"
        "minimum_calls = 5\n"
        'record_exceptions = ["ConnectionError", "tests.circuit_breaker.support.Boom"]\n'
    )
    loaded = CircuitBreakerConfig.validate_mapping(load_toml(path)["circuit_breaker"])
    assert loaded.record_exceptions == (ConnectionError, Boom)
    assert (loaded.window_type, loaded.window_size) == ("time", 30)


def test_defaults_are_resilience4j_s() -> None:
    defaults = CircuitBreakerConfig()
    assert (defaults.window_type, defaults.window_size, defaults.minimum_calls) == (
        "count",
        100,
        100,
    )
    assert defaults.failure_rate_threshold == 50.0
    assert (defaults.slow_call_duration, defaults.slow_call_rate_threshold) == (60.0, 100.0)
    assert defaults.wait_duration_in_open == 60.0
    assert defaults.permitted_calls_in_half_open == 10
