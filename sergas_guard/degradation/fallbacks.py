"""Fallback strategies: what to answer when the primary call fails.

A strategy sees every successful result (``remember``) and is asked for an answer
when the primary failed or was not called (``serve`` / ``serve_sync``). It answers
with a :class:`FallbackAnswer`, or raises :class:`FallbackMiss` when it has none,
after which the caller gets the primary's own error (so fallbacks chain: the next
``with_fallback`` out catches it). Which strategy answered, and whether the answer
is stale, is recorded for the current call: see :func:`last_fallback`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError, GuardError
from sergas_guard.validation import callable_or_none, seconds, valid_name, whole

__all__ = [
    "CachedFallback",
    "FallbackAnswer",
    "FallbackContext",
    "FallbackInfo",
    "FallbackMiss",
    "FallbackStrategy",
    "ServiceFallback",
    "StaticFallback",
    "last_fallback",
]


class FallbackMiss(GuardError):
    """A fallback strategy has no answer for this call (e.g. nothing cached yet)."""

    def __init__(self, strategy: str, reason: str) -> None:
        self.strategy = strategy
        self.reason = reason
        super().__init__(f"fallback {strategy!r} has no answer: {reason}")


@dataclass(frozen=True)
class FallbackContext:
    """One call that needs (or may need) a fallback.

    ``service`` names the protected call (the function, or the manager's service name);
    ``error`` is what the primary raised, or None when it was not called at all;
    ``user_id``, when known, keeps one user's cached answers from another's.
    """

    service: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    user_id: str | None = None

    def failed(self, error: BaseException) -> FallbackContext:
        """The same call, now with the primary's error."""
        return FallbackContext(self.service, self.args, self.kwargs, error, self.user_id)


@dataclass(frozen=True)
class FallbackAnswer:
    """A strategy's answer; ``stale`` when it is older than the strategy's freshness limit."""

    value: Any
    stale: bool = False
    age: float | None = None


@dataclass(frozen=True)
class FallbackInfo:
    """What served the last call in this context instead of its primary."""

    service: str
    strategy: str
    stale: bool
    age: float | None
    error: str | None


logger = logging.getLogger("sergas_guard.degradation.fallbacks")

_LAST: ContextVar[FallbackInfo | None] = ContextVar("sergas_guard_last_fallback", default=None)


def last_fallback() -> FallbackInfo | None:
    """The fallback that answered the most recent protected call in this context (task or
    thread), or None when that call was answered by its primary."""
    return _LAST.get()


def _record(info: FallbackInfo | None) -> None:
    _LAST.set(info)


@runtime_checkable
class FallbackStrategy(Protocol):
    """What a fallback provides. ``name`` identifies it (e.g. in ``execute_with_fallback``)."""

    name: str

    def remember(self, context: FallbackContext, value: Any) -> None:
        """The primary succeeded with ``value`` (cache it if this strategy caches)."""
        ...

    def serve_sync(self, context: FallbackContext) -> FallbackAnswer:
        """Answer instead of the primary; raises FallbackMiss when there is no answer."""
        ...

    async def serve(self, context: FallbackContext) -> FallbackAnswer:
        """Async face of :meth:`serve_sync`."""
        ...


def _check_name(name: str) -> str:
    return valid_name(name, "name")


def default_call_key(context: FallbackContext) -> str:
    """A bounded key for one call: the service plus a digest of user id and arguments."""
    text = repr((context.user_id, context.args, sorted(context.kwargs.items())))
    service = context.service
    return f"{service}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


class CachedFallback:
    """Serve the last good result of the same call when the primary fails (stale-if-error).

    Every successful result is remembered per call key (service + arguments, or
    ``key_func(*args, **kwargs)``), at most ``max_entries`` of them (least recently
    used dropped first). An answer younger than ``cache_ttl`` seconds is fresh; older
    ones are served as stale, for at most ``max_stale`` seconds past ``cache_ttl``
    (None: as long as they are kept).
    """

    def __init__(
        self,
        name: str,
        cache_ttl: float = 300.0,
        *,
        max_entries: int = 1024,
        max_stale: float | None = None,
        key_func: Callable[..., Hashable] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = _check_name(name)
        self.cache_ttl = seconds(cache_ttl, "cache_ttl")
        self.max_entries = whole(max_entries, "max_entries", minimum=1)
        self.max_stale = (
            None if max_stale is None else seconds(max_stale, "max_stale", allow_zero=True)
        )
        self.key_func = callable_or_none(key_func, "key_func")
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"CachedFallback(name={self.name!r}, cache_ttl={self.cache_ttl}, entries={len(self)})"
        )

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, context: FallbackContext) -> str:
        """The cache key of this call."""
        if self.key_func is not None:
            return f"{context.service}:{self.key_func(*context.args, **context.kwargs)!r}"
        return default_call_key(context)

    def remember(self, context: FallbackContext, value: Any) -> None:
        key = self.key(context)
        with self._lock:
            self._entries[key] = (value, self.clock.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def lookup(
        self, context: FallbackContext, *, fresh_only: bool = False
    ) -> FallbackAnswer | None:
        """The cached answer for this call, or None (expired, or absent)."""
        key = self.key(context)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, stored_at = entry
            age = self.clock.monotonic() - stored_at
            stale = age > self.cache_ttl
            if stale and (
                fresh_only or (self.max_stale is not None and age > self.cache_ttl + self.max_stale)
            ):
                if not fresh_only:
                    del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return FallbackAnswer(value, stale=stale, age=age)

    def serve_sync(self, context: FallbackContext) -> FallbackAnswer:
        answer = self.lookup(context)
        if answer is None:
            raise FallbackMiss(self.name, "nothing cached for this call")
        return answer

    async def serve(self, context: FallbackContext) -> FallbackAnswer:
        return self.serve_sync(context)

    def clear(self) -> None:
        """Forget every cached result."""
        with self._lock:
            self._entries.clear()


class StaticFallback:
    """Answer with a fixed ``value``, or with a fresh ``factory()`` result each time.

    A callable ``value`` is taken as the factory (``StaticFallback("empty", list)`` answers
    a new empty list per call); to answer with a function itself, wrap it in a factory.
    """

    def __init__(
        self, name: str, value: Any = None, *, factory: Callable[[], Any] | None = None
    ) -> None:
        self.name = _check_name(name)
        callable_or_none(factory, "factory")
        if factory is not None and value is not None:
            raise ConfigurationError("give a value or a factory, not both", field="factory")
        if callable(value):
            value, factory = None, value
        self.value = value
        self.factory = factory

    def __repr__(self) -> str:
        return f"StaticFallback(name={self.name!r})"

    def remember(self, context: FallbackContext, value: Any) -> None:
        """Nothing to remember: the answer is fixed."""

    def serve_sync(self, context: FallbackContext) -> FallbackAnswer:
        return FallbackAnswer(self.factory() if self.factory is not None else self.value)

    async def serve(self, context: FallbackContext) -> FallbackAnswer:
        value = self.factory() if self.factory is not None else self.value
        if inspect.isawaitable(value):
            value = await value
        return FallbackAnswer(value)


class ServiceFallback:
    """Call an alternate service, ``func(*args, **kwargs)``, with the primary's arguments.

    ``func`` may be sync or async; an async ``func`` can only back async calls. If it
    raises, that error propagates (an outer fallback may catch it).
    """

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = _check_name(name)
        if not callable(func):
            raise ConfigurationError("ServiceFallback needs a callable", field="func")
        self.func = func

    def __repr__(self) -> str:
        func = getattr(self.func, "__qualname__", self.func)
        return f"ServiceFallback(name={self.name!r}, func={func!r})"

    def remember(self, context: FallbackContext, value: Any) -> None:
        """Nothing to remember: the alternate service answers live."""

    def serve_sync(self, context: FallbackContext) -> FallbackAnswer:
        if inspect.iscoroutinefunction(self.func):
            raise ConfigurationError(
                f"fallback {self.name!r} is async and cannot serve a sync call", field="func"
            )
        return FallbackAnswer(self.func(*context.args, **context.kwargs))

    async def serve(self, context: FallbackContext) -> FallbackAnswer:
        value = self.func(*context.args, **context.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return FallbackAnswer(value)


def as_strategy(
    fallback: FallbackStrategy | Callable[..., Any], name: str | None = None
) -> FallbackStrategy:
    """A strategy as is; a plain callable becomes a :class:`ServiceFallback`."""
    if isinstance(fallback, FallbackStrategy):
        return fallback
    if callable(fallback):
        return ServiceFallback(name or str(getattr(fallback, "__name__", "fallback")), fallback)
    raise ConfigurationError(
        "a fallback must be a FallbackStrategy or a callable", field="fallback"
    )


def _info(
    strategy: FallbackStrategy, context: FallbackContext, answer: FallbackAnswer
) -> FallbackInfo:
    error = None if context.error is None else type(context.error).__name__
    return FallbackInfo(context.service, strategy.name, answer.stale, answer.age, error)


def _no_answer(context: FallbackContext, strategies: Sequence[FallbackStrategy]) -> BaseException:
    # The caller gets the primary's own error (an outer fallback may catch it), or,
    # when the primary was not called, a miss naming the strategies asked.
    if context.error is not None:
        return context.error
    names = ", ".join(s.name for s in strategies) or "none registered"
    return FallbackMiss(names, f"no fallback could answer for {context.service!r}")


def _failed_strategy(strategy: FallbackStrategy, context: FallbackContext, exc: Exception) -> None:
    if not isinstance(exc, FallbackMiss):
        logger.warning(
            "fallback %s for %s failed: %s: %s",
            strategy.name,
            context.service,
            type(exc).__name__,
            exc,
        )


def serve_chain_sync(strategies: Sequence[FallbackStrategy], context: FallbackContext) -> Any:
    """Ask each strategy in turn; the first answer wins. A strategy that misses or fails
    is skipped; when none answers, the primary's error is raised again."""
    for strategy in strategies:
        try:
            answer = strategy.serve_sync(context)
        except Exception as exc:
            _failed_strategy(strategy, context, exc)
            continue
        _record(_info(strategy, context, answer))
        return answer.value
    raise _no_answer(context, strategies)


async def serve_chain(strategies: Sequence[FallbackStrategy], context: FallbackContext) -> Any:
    """Async face of :func:`serve_chain_sync`."""
    for strategy in strategies:
        try:
            answer = await strategy.serve(context)
        except Exception as exc:
            _failed_strategy(strategy, context, exc)
            continue
        _record(_info(strategy, context, answer))
        return answer.value
    raise _no_answer(context, strategies)


def primary_answered(
    strategies: Sequence[FallbackStrategy], context: FallbackContext, value: Any
) -> None:
    """Let the strategies remember a good result and mark this call as served by its primary."""
    for strategy in strategies:
        strategy.remember(context, value)
    _record(None)
