"""Calls to a named service with fallbacks, a circuit breaker, and the degradation level.

What the level does to a call (see :func:`plan_call`): below CRITICAL the primary is
called and its failure answered by the fallbacks; at CRITICAL a fresh cached answer is
served without calling the primary; at MAINTENANCE the primary is never called.
A feature flag with the service's name that is off for the call (disabled, outside
its rollout, or non-essential while degraded) also skips the primary.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from sergas_guard.degradation.fallbacks import (
    FallbackContext,
    FallbackStrategy,
    primary_answered,
    serve_chain,
    serve_chain_sync,
)
from sergas_guard.degradation.levels import DegradationLevel
from sergas_guard.errors import ConfigurationError, FeatureDisabledError

__all__ = ["CallPlan", "ServiceCalls", "plan_call"]

logger = logging.getLogger("sergas_guard.degradation")

CallPlan = Literal["primary", "cache_first", "fallback_only"]


def plan_call(level: DegradationLevel) -> CallPlan:
    """How a protected call runs at ``level``."""
    if level >= DegradationLevel.MAINTENANCE:
        return "fallback_only"
    if level >= DegradationLevel.CRITICAL:
        return "cache_first"
    return "primary"


def _accepts_user_id(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "user_id" or p.kind is p.VAR_KEYWORD for p in parameters)


class ServiceCalls:
    """The fallback registry and ``execute_with_fallback`` of a DegradationManager."""

    def __init__(self, circuit_breaker_manager: Any = None) -> None:
        self.circuit_breaker_manager = circuit_breaker_manager
        self._fallbacks: dict[str, list[FallbackStrategy]] = {}
        self._fallbacks_lock = threading.Lock()

    @property
    def level(self) -> DegradationLevel:
        """The degradation level calls follow (the manager overrides this)."""
        return DegradationLevel.NORMAL

    def register_fallback(self, service_name: str, strategy: FallbackStrategy) -> None:
        """Add ``strategy`` to the fallbacks of ``service_name`` (tried in registration order).

        Raises ConfigurationError for a non-strategy or a name already used for the service.
        """
        if not isinstance(strategy, FallbackStrategy):
            raise ConfigurationError(f"{strategy!r} is not a FallbackStrategy", field="strategy")
        with self._fallbacks_lock:
            chain = self._fallbacks.setdefault(service_name, [])
            if any(s.name == strategy.name for s in chain):
                raise ConfigurationError(
                    f"service {service_name!r} already has a fallback named {strategy.name!r}",
                    field="strategy",
                )
            chain.append(strategy)

    def fallbacks(self) -> dict[str, list[FallbackStrategy]]:
        """The fallbacks registered per service."""
        with self._fallbacks_lock:
            return {name: list(chain) for name, chain in self._fallbacks.items()}

    def get_fallback(self, name: str, service_name: str | None = None) -> FallbackStrategy | None:
        """The strategy called ``name``: the service's own first, then any service's."""
        with self._fallbacks_lock:
            chains = [self._fallbacks.get(service_name or "", []), *self._fallbacks.values()]
        for chain in chains:
            for strategy in chain:
                if strategy.name == name:
                    return strategy
        return None

    def _strategies(
        self, service_name: str, fallback_strategy: str | FallbackStrategy | None
    ) -> list[FallbackStrategy]:
        if isinstance(fallback_strategy, FallbackStrategy):
            return [fallback_strategy]
        if fallback_strategy is None:
            return self.fallbacks().get(service_name, [])
        found = self.get_fallback(fallback_strategy, service_name)
        if found is None:
            logger.error(
                "no fallback named %r is registered (service %r); its calls run without one",
                fallback_strategy,
                service_name,
            )
            return []
        return [found]

    def _prepare(
        self,
        service_name: str,
        primary_func: Callable[..., Any],
        fallback_strategy: str | FallbackStrategy | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        user_id: object,
    ) -> tuple[list[FallbackStrategy], FallbackContext, CallPlan]:
        if not callable(primary_func):
            raise ConfigurationError("primary_func must be callable", field="primary_func")
        call_kwargs = dict(kwargs)
        if user_id is not None and _accepts_user_id(primary_func):
            call_kwargs["user_id"] = user_id
        uid = None if user_id is None else str(user_id)
        context = FallbackContext(service_name, args, call_kwargs, None, uid)
        strategies = self._strategies(service_name, fallback_strategy)
        plan = plan_call(self.level)
        if plan == "fallback_only":
            context = context.failed(FeatureDisabledError(service_name, reason="maintenance"))
        elif (off := self._switched_off(service_name, uid)) is not None:
            plan, context = "fallback_only", context.failed(off)
        return strategies, context, plan

    def _switched_off(self, service_name: str, user_id: str | None) -> FeatureDisabledError | None:
        """Why a feature flag named like the service is off for this call (the manager
        implements it), or None to call the primary."""
        return None

    def _fresh(
        self, strategies: list[FallbackStrategy], context: FallbackContext
    ) -> list[FallbackStrategy]:
        """Strategies holding a fresh answer for this call (served at CRITICAL without a call)."""
        fresh = []
        for strategy in strategies:
            # Only caching strategies (with ``lookup``) can answer without a failure.
            lookup = getattr(strategy, "lookup", None)
            if callable(lookup) and lookup(context, fresh_only=True) is not None:
                fresh.append(strategy)
        return fresh

    async def execute_with_fallback(
        self,
        service_name: str,
        primary_func: Callable[..., Any],
        fallback_strategy: str | FallbackStrategy | None = None,
        *args: Any,
        user_id: object = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``primary_func(*args, **kwargs)`` for ``service_name``; answer from the fallbacks
        when it fails (any ``Exception``, including an open breaker's ``CircuitOpenError``).

        ``fallback_strategy`` names one registered strategy (default: all of the service's,
        in order). ``user_id`` is passed to the primary when it takes a ``user_id``
        parameter, and keys cached answers per user. With a circuit breaker manager the
        call goes through ``get_or_create(service_name)``. When no fallback answers, the
        primary's error is raised (at MAINTENANCE a FeatureDisabledError).
        """
        strategies, context, plan = self._prepare(
            service_name, primary_func, fallback_strategy, args, kwargs, user_id
        )
        if plan == "fallback_only":
            return await serve_chain(strategies, context)
        if plan == "cache_first" and (fresh := self._fresh(strategies, context)):
            return await serve_chain(fresh, context)
        try:
            result = await self._call_async(service_name, primary_func, context)
        except Exception as exc:
            return await serve_chain(strategies, context.failed(exc))
        primary_answered(strategies, context, result)
        return result

    def execute_with_fallback_sync(
        self,
        service_name: str,
        primary_func: Callable[..., Any],
        fallback_strategy: str | FallbackStrategy | None = None,
        *args: Any,
        user_id: object = None,
        **kwargs: Any,
    ) -> Any:
        """Sync face of :meth:`execute_with_fallback` (the primary must be sync)."""
        if inspect.iscoroutinefunction(primary_func):
            raise ConfigurationError(
                "execute_with_fallback_sync needs a sync primary_func", field="primary_func"
            )
        strategies, context, plan = self._prepare(
            service_name, primary_func, fallback_strategy, args, kwargs, user_id
        )
        if plan == "fallback_only":
            return serve_chain_sync(strategies, context)
        if plan == "cache_first" and (fresh := self._fresh(strategies, context)):
            return serve_chain_sync(fresh, context)
        try:
            result = self._call_sync(service_name, primary_func, context)
        except Exception as exc:
            return serve_chain_sync(strategies, context.failed(exc))
        primary_answered(strategies, context, result)
        return result

    async def _call_async(
        self, service_name: str, func: Callable[..., Any], context: FallbackContext
    ) -> Any:
        if self.circuit_breaker_manager is not None:
            breaker = self.circuit_breaker_manager.get_or_create(service_name)
            return await breaker.call(func, *context.args, **context.kwargs)
        result = func(*context.args, **context.kwargs)
        return await result if inspect.isawaitable(result) else result

    def _call_sync(
        self, service_name: str, func: Callable[..., Any], context: FallbackContext
    ) -> Any:
        if self.circuit_breaker_manager is not None:
            breaker = self.circuit_breaker_manager.get_or_create(service_name)
            return breaker.call_sync(func, *context.args, **context.kwargs)
        return func(*context.args, **context.kwargs)
