"""Circuit breakers: fail fast on a failing dependency, recover by probing, share state.

A :class:`CircuitBreaker` judges a sliding window of call outcomes (failure rate and
slow-call rate), opens when a threshold is reached, lets a fixed number of probes
through after its wait, and closes or re-opens on their outcome. Breakers of one
name share their state across processes through a ``RedisStorage``.
:class:`CircuitBreakerManager` keeps breakers by name; :func:`circuit_breaker` is the
decorator; :func:`with_retry` retries with tenacity without hammering an open circuit.
"""

from __future__ import annotations

from sergas_guard.circuit_breaker.breaker import CircuitBreaker, Listener
from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.manager import (
    CircuitBreakerManager,
    circuit_breaker,
    default_manager,
)
from sergas_guard.circuit_breaker.retry import NEVER_RETRIED, RetryBudget, with_retry
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState, EventKind
from sergas_guard.errors import CircuitOpenError

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerEvent",
    "CircuitBreakerManager",
    "CircuitOpenError",
    "CircuitState",
    "EventKind",
    "Listener",
    "NEVER_RETRIED",
    "RetryBudget",
    "circuit_breaker",
    "default_manager",
    "with_retry",
]
