"""``@with_fallback``: answer from a fallback strategy when the wrapped call fails."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from sergas_guard.degradation.fallbacks import (
    FallbackContext,
    FallbackStrategy,
    as_strategy,
    primary_answered,
    serve_chain,
    serve_chain_sync,
)
from sergas_guard.errors import CircuitOpenError, ConfigurationError
from sergas_guard.validation import valid_name

__all__ = ["exception_types", "with_fallback"]

P = ParamSpec("P")
R = TypeVar("R")


def exception_types(
    on: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    """Validate an ``on=`` argument: an exception class or a tuple of them."""
    types = on if isinstance(on, tuple) else (on,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError("on= takes exception classes", field="on")
    return types


def _check_breaker(breaker: Any, is_async: bool) -> None:
    needed = "call" if is_async else "call_sync"
    if breaker is not None and not callable(getattr(breaker, needed, None)):
        raise ConfigurationError(
            f"circuit_breaker must be a CircuitBreaker (with .{needed})", field="circuit_breaker"
        )


def with_fallback(
    fallback: FallbackStrategy | Callable[..., Any],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    circuit_breaker: Any = None,
    name: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function so that, when it raises one of ``on``, the
    fallback answers instead.

    ``fallback`` is a :class:`FallbackStrategy` (``CachedFallback``, ``StaticFallback``,
    ``ServiceFallback``) or a callable taking the same arguments. With
    ``circuit_breaker`` (a ``CircuitBreaker``) the call goes through the breaker and a
    refused call (``CircuitOpenError``) is answered by the fallback too. ``name`` keys
    cached results (default: the function's qualified name). Stack decorators to chain
    fallbacks: when a fallback has no answer, the original error reaches the next one.
    Raises ConfigurationError at decoration time for bad arguments.
    """
    if name is not None:
        valid_name(name, "name")
    chain = (as_strategy(fallback),)
    catch = exception_types(on)
    if circuit_breaker is not None:
        catch = (*catch, CircuitOpenError)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        service = name or str(getattr(func, "__qualname__", type(func).__qualname__))
        is_async = inspect.iscoroutinefunction(func)
        _check_breaker(circuit_breaker, is_async)

        if is_async:

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                context = FallbackContext(service, args, kwargs)
                try:
                    if circuit_breaker is not None:
                        result = await circuit_breaker.call(func, *args, **kwargs)
                    else:
                        result = await cast(Any, func)(*args, **kwargs)
                except catch as exc:
                    return await serve_chain(chain, context.failed(exc))
                primary_answered(chain, context, result)
                return result

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            context = FallbackContext(service, args, kwargs)
            try:
                if circuit_breaker is not None:
                    result = circuit_breaker.call_sync(func, *args, **kwargs)
                else:
                    result = func(*args, **kwargs)
            except catch as exc:
                return cast(R, serve_chain_sync(chain, context.failed(exc)))
            primary_answered(chain, context, result)
            return cast(R, result)

        return run_sync

    return decorate
