"""``@rate_limited``: a limiter in front of a sync or async function."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from sergas_guard.errors import ConfigurationError, RequestTooCostly
from sergas_guard.ratelimit.callback_values import FaultLog, checked_key, cost_of, key_of
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.ratelimit.limiter import GLOBAL_KEY, RateLimitDecision, RateLimiter
from sergas_guard.ratelimit.result import RateLimitStrategy
from sergas_guard.ratelimit.stores.base import RateLimitStorage
from sergas_guard.validation import seconds

__all__ = ["DecisionListener", "decision_listener", "rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")

KeyArg = str | Callable[..., str] | None
CostArg = int | Callable[..., int]


logger = logging.getLogger("sergas_guard.ratelimit")


class DecisionListener(Protocol):
    """What hears the final decisions of ``@rate_limited`` functions during a request."""

    def record_limiter(self, limiter: RateLimiter, decision: RateLimitDecision) -> None:
        """Called with each final decision (admitted, or rejected and about to raise)."""
        ...

    def client_key(self) -> str:
        """The identity of the request's client (``ip:<address>``), which a call counts
        under when its key function fails."""
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

    Raises ConfigurationError at decoration naming the argument for a bad limit, key,
    cost, ``on_limit`` or ``max_wait`` (a finite number of seconds; None waits without
    bound), or a fixed cost the limit can never admit. Per call, outside a web request,
    a key callable returning anything but a non-empty str, or a cost callable returning
    anything but a whole number the limit can admit, raises ConfigurationError (what the
    callables raise propagates). While a web request is served (see docs/ratelimit.md)
    such faults are logged once instead: the call counts under the client's address,
    costs 1 (a float is rounded up), and a cost the limit can never admit raises
    RequestTooCostly (a 413).
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
        identity = _key_function(key, limiter)
        units = _cost_function(cost, limiter)
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


def _key_function(key: KeyArg, limiter: RateLimiter) -> Callable[..., str]:
    if key is None:
        return lambda *args, **kwargs: GLOBAL_KEY
    if isinstance(key, str):
        fixed = checked_key(key)
        if fixed is None:
            raise ConfigurationError("key must not be empty", field="key")
        return lambda *args, **kwargs: fixed
    if not callable(key):
        raise ConfigurationError(
            f"key must be a string or a callable, not {type(key).__name__}", field="key"
        )
    func = key
    faults = FaultLog(logger, f"key function of @rate_limited {limiter.name!r}")

    def checked_identity(*args: Any, **kwargs: Any) -> str:
        identity = key_of(func, *args, **kwargs)
        if isinstance(identity, str):
            return identity
        listener = decision_listener.get()
        if listener is None:  # plain service code: its caller hears of the fault
            if identity.error is not None:
                raise identity.error  # the key function's own error, as from any call
            raise ConfigurationError(
                f"key function of @rate_limited {limiter.name!r} {identity.kind}; "
                "it must return a non-empty str",
                field="key",
            )
        faults.report(
            identity.kind, "it must return a non-empty str; counting under the client address"
        )
        return listener.client_key()

    return checked_identity


def _cost_function(cost: CostArg, limiter: RateLimiter) -> Callable[..., int]:
    if isinstance(cost, int) and not isinstance(cost, bool):
        fixed = cost
        return lambda *args, **kwargs: fixed
    if not callable(cost):
        raise ConfigurationError(
            f"cost must be an int or a callable, not {type(cost).__name__}", field="cost"
        )
    func = cost
    capacity = limiter.capacity
    faults = FaultLog(logger, f"cost function of @rate_limited {limiter.name!r}")

    def checked_units(*args: Any, **kwargs: Any) -> int:
        units, fault = cost_of(func, *args, **kwargs)
        if fault is None and units <= capacity:
            return units
        if decision_listener.get() is None:  # plain service code: its caller hears of it
            if fault is not None and fault.error is not None:
                raise fault.error  # the cost function's own error, as from any call
            if fault is not None:
                raise ConfigurationError(
                    f"cost function of @rate_limited {limiter.name!r} {fault.kind}; "
                    "it must return a whole number >= 0",
                    field="cost",
                )
            limiter.validate_cost(units)  # above capacity: raises ConfigurationError
        if fault is not None:
            faults.report(fault.kind, f"it must return a whole number >= 0; charging {units}")
        if units > capacity:
            spec = min(limiter.specs, key=lambda spec: spec.capacity)
            raise RequestTooCostly(limit=spec.describe(), capacity=spec.capacity)
        return units

    return checked_units
