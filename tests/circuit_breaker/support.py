"""Helpers shared by the circuit-breaker tests."""

from __future__ import annotations

import contextlib
from typing import Any

from sergas_guard.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from sergas_guard.clock import ManualClock


class Boom(Exception):
    """The failure our protected functions raise."""


def fail() -> None:
    raise Boom("dependency failed")


def succeed() -> str:
    return "ok"


def config(**overrides: Any) -> CircuitBreakerConfig:
    """A small breaker: window of 4 calls, opens at 50% after 4 calls, 10 s wait, 2 probes."""
    values: dict[str, Any] = {
        "window_size": 4,
        "minimum_calls": 4,
        "wait_duration_in_open": 10.0,
        "permitted_calls_in_half_open": 2,
        "slow_call_duration": 1.0,
    }
    values.update(overrides)
    return CircuitBreakerConfig(**values)


def breaker(clock: ManualClock | None = None, **overrides: Any) -> CircuitBreaker:
    return CircuitBreaker("dep", config(**overrides), clock=clock or ManualClock())


def fail_times(target: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with contextlib.suppress(Boom):
            target.call_sync(fail)


def is_refused(target: CircuitBreaker) -> bool:
    try:
        target.call_sync(succeed)
    except CircuitOpenError:
        return True
    return False


def state(target: CircuitBreaker) -> CircuitState:
    """The breaker's state, read afresh (a function, so type checkers do not pin it)."""
    return target.state
