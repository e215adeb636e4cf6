"""The five rate-limit strategies as pure functions.

Each is ``decide(state, now_us, cost, spec) -> (new_state, RateLimitResult)``: no I/O,
no clock, no locks. ``state`` is ``None`` for a fresh key; ``cost=0`` is a peek that
reports whether a request of cost 1 would pass and changes nothing; a rejected
request returns the state it was given. Storages make it atomic: the memory storage
under a lock, the Redis storage as the Lua twin of each function: ``<strategy>.lua``
beside ``<strategy>.py`` in this package, with the shared helpers (``common.lua``) and
the entry point that decides every limit of a request (``decide.lua``); the script is
assembled by :mod:`sergas_guard.ratelimit.stores.script`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, RateLimitStrategy
from sergas_guard.ratelimit.strategies import (
    fixed_window,
    leaky_bucket,
    sliding_log,
    sliding_window,
    token_bucket,
)

__all__ = ["DECIDERS", "Decider", "decide"]

Decider = Callable[[Any, int, int, LimitSpec], tuple[Any, RateLimitResult]]

DECIDERS: dict[RateLimitStrategy, Decider] = {
    RateLimitStrategy.FIXED_WINDOW: fixed_window.decide,
    RateLimitStrategy.SLIDING_WINDOW: sliding_window.decide,
    RateLimitStrategy.SLIDING_LOG: sliding_log.decide,
    RateLimitStrategy.TOKEN_BUCKET: token_bucket.decide,
    RateLimitStrategy.LEAKY_BUCKET: leaky_bucket.decide,
}


def decide(state: Any, now: int, cost: int, spec: LimitSpec) -> tuple[Any, RateLimitResult]:
    """Apply ``spec``'s strategy (see the module docstring for the contract)."""
    return DECIDERS[spec.strategy](state, now, cost, spec)
