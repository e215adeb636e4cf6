"""``@rate_limited``: a limiter in front of a sync or async function."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.ratelimit.limiter import GLOBAL_KEY, RateLimitDecision, RateLimiter
from sergas_guard.ratelimit.result import RateLimitStrategy
from sergas_guard.storage.base import RateLimitStorage
from sergas_guard.validation import seconds

__all__ = ["DecisionListener", "decision_listener", "rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")

KeyArg = str | Callable[..., str] | None
CostArg = int | Callable[..., int]


class DecisionListener(Protocol):
    """What hears the final decisions of ``@rate_limited`` functions during a request."""

    def record_limiter(self, limiter: RateLimiter, decision: RateLimitDecision) -> None:
        """Called with each final decision (admitted, or rejected and about to raise)."""
        ...


#: Set by a web edge for the duration of a request to the request's context, so the
#: response can carry the headers of decisions taken inside the app. The web edges
#: use this same variable as their request context (one set per request, not two).
decision_listener: ContextVar[DecisionListener | None] = ContextVar(
    "sergas_guard_request", default=None
)


def rate_limited(
    limit: str | RateLimitConfig | RateLimiter,
    *,
    key: KeyArg = None,
    cost: CostArg = 1,
    on_limit: Literal["raise", "wait"] = "raise",
    max_wait: float | None = None,
    storage: RateLimitStorage | str | None = None,
    strategy: RateLimitStrategy | str | None = None,
    name: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit calls of the decorated function.

    ``limit`` is a rate string (``"10/second; 100/minute"``), a RateLimitConfig or a
    ready RateLimiter (to share one budget between functions). ``key`` is a fixed
    identity or a callable receiving the call's arguments (default: one budget for
    the function). ``cost`` is an int or a callable of the call's arguments.
    ``on_limit="raise"`` raises RateLimitExceeded; ``"wait"`` sleeps until admitted,
    raising RateLimitExceeded once the total wait would pass ``max_wait`` seconds.
    Works on sync and async functions and keeps their signature.
    Raises ConfigurationError naming the argument for a bad limit, key, cost,
    ``on_limit`` or ``max_wait`` (a finite number of seconds; None waits without bound).
    """
    if on_limit not in ("raise", "wait"):
        raise ConfigurationError(
            f"on_limit must be 'raise' or 'wait', not {on_limit!r}", field="on_limit"
        )
    if max_wait is not None:
        max_wait = seconds(max_wait, "max_wait", allow_zero=True)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        limiter = _limiter_for(func, limit, storage, strategy, name)
        if isinstance(cost, int):
            limiter.validate_cost(cost)
        identity = _key_function(key)
        units = _cost_function(cost)
        wait = on_limit == "wait"
        budget = float("inf") if max_wait is None else max_wait

        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                who, how_much = identity(*args, **kwargs), units(*args, **kwargs)
                waited = 0.0
                while True:
                    decision = await limiter.decide(who, how_much)
                    if decision.allowed:
                        _tell_listener(limiter, decision)
                        return await async_func(*args, **kwargs)
                    pause = _pause_or_raise(limiter, decision, wait, waited, budget)
                    await asyncio.sleep(pause)
                    waited += pause

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            who, how_much = identity(*args, **kwargs), units(*args, **kwargs)
            waited = 0.0
            while True:
                decision = limiter.decide_sync(who, how_much)
                if decision.allowed:
                    _tell_listener(limiter, decision)
                    return func(*args, **kwargs)
                pause = _pause_or_raise(limiter, decision, wait, waited, budget)
                time.sleep(pause)
                waited += pause

        return sync_wrapper

    return decorate


def _tell_listener(limiter: RateLimiter, decision: RateLimitDecision) -> None:
    listener = decision_listener.get()
    if listener is not None:
        listener.record_limiter(limiter, decision)


def _pause_or_raise(
    limiter: RateLimiter, decision: RateLimitDecision, wait: bool, waited: float, budget: float
) -> float:
    """Seconds to sleep before trying again, or raise when not waiting / over budget."""
    pause = decision.result.retry_after
    if not wait or waited + pause > budget:
        _tell_listener(limiter, decision)
        raise decision.exception()
    return pause


def _limiter_for(
    func: Callable[..., Any],
    limit: str | RateLimitConfig | RateLimiter,
    storage: RateLimitStorage | str | None,
    strategy: RateLimitStrategy | str | None,
    name: str | None,
) -> RateLimiter:
    if isinstance(limit, RateLimiter):
        if storage is not None or strategy is not None or name is not None:
            raise ConfigurationError(
                "storage, strategy and name are the given RateLimiter's own", field="limit"
            )
        return limit
    if isinstance(limit, RateLimitConfig):
        return RateLimiter(limit, storage)
    if isinstance(limit, str):
        return RateLimiter(
            limit,
            storage,
            name=name or f"{func.__module__}.{func.__qualname__}",
            strategy=strategy,
        )
    raise ConfigurationError(
        f"limit must be a rate string, RateLimitConfig or RateLimiter, not {type(limit).__name__}",
        field="limit",
    )


def _key_function(key: KeyArg) -> Callable[..., str]:
    if key is None:
        return lambda *args, **kwargs: GLOBAL_KEY
    if isinstance(key, str):
        fixed = key
        return lambda *args, **kwargs: fixed
    if callable(key):
        return key
    raise ConfigurationError(
        f"key must be a string or a callable, not {type(key).__name__}", field="key"
    )


def _cost_function(cost: CostArg) -> Callable[..., int]:
    if isinstance(cost, int) and not isinstance(cost, bool):
        fixed = cost
        return lambda *args, **kwargs: fixed
    if callable(cost):
        return cost
    raise ConfigurationError(
        f"cost must be an int or a callable, not {type(cost).__name__}", field="cost"
    )
