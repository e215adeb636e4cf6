"""``@feature_flag``: run a function only when its flag is on for the call."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from sergas_guard.degradation.definitions import FlagEvaluation
from sergas_guard.degradation.fallbacks import (
    FallbackContext,
    FallbackStrategy,
    serve_chain,
    serve_chain_sync,
)
from sergas_guard.degradation.flags import FeatureFlags
from sergas_guard.errors import ConfigurationError, FeatureDisabledError
from sergas_guard.validation import callable_or_none, valid_name

__all__ = ["default_flags", "feature_flag", "set_default_flags"]

P = ParamSpec("P")
R = TypeVar("R")

_default: FeatureFlags | None = None
_default_lock = threading.Lock()


def default_flags() -> FeatureFlags:
    """The process-wide FeatureFlags used by ``@feature_flag`` without ``flags=`` (created on
    first use, in memory)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FeatureFlags()
        return _default


def set_default_flags(flags: FeatureFlags | None) -> None:
    """Replace the process-wide FeatureFlags (None: a fresh in-memory one on next use)."""
    global _default
    with _default_lock:
        _default = flags


def _flags_of(flags: FeatureFlags | None) -> FeatureFlags:
    # Not ``flags or ...``: an empty FeatureFlags is falsy (it has a length).
    return flags if flags is not None else default_flags()


UserIdSource = str | Callable[..., Any] | None


def _user_id_getter(func: Callable[..., Any], user_id: UserIdSource) -> Callable[..., Any]:
    """How to find the user id of a call: a parameter name, or a callable of the arguments."""
    if user_id is None:
        return lambda *args, **kwargs: None
    if callable(user_id):
        return user_id
    signature = inspect.signature(func)
    if user_id not in signature.parameters:
        raise ConfigurationError(
            f"{func.__qualname__} has no parameter {user_id!r} to read the user id from",
            field="user_id",
        )

    def from_parameter(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        return bound.arguments.get(user_id)

    return from_parameter


def feature_flag(
    name: str,
    flags: FeatureFlags | None = None,
    user_id: UserIdSource = None,
    fallback: FallbackStrategy | Callable[..., Any] | None = None,
    *,
    context: Callable[..., Mapping[str, Any]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function to run only when flag ``name`` is on for the call.

    ``flags`` defaults to the process-wide :func:`default_flags` (looked up at call
    time). ``user_id`` is the name of the function's parameter holding the user id, or
    a callable given the call's arguments that returns it. ``context`` (a callable of the
    arguments) supplies an evaluation context. When the flag is off, ``fallback`` answers
    (a callable with the same arguments, or a FallbackStrategy); without one the call
    raises :class:`FeatureDisabledError` with the reason.
    """
    valid_name(name, "name")
    if flags is not None and not isinstance(flags, FeatureFlags):
        raise ConfigurationError(f"flags must be a FeatureFlags, not {flags!r:.80}", field="flags")
    if user_id is not None and not isinstance(user_id, str) and not callable(user_id):
        raise ConfigurationError(
            f"user_id must be a parameter name or a function, not {user_id!r:.80}",
            field="user_id",
        )
    callable_or_none(context, "context")
    if fallback is not None and not (isinstance(fallback, FallbackStrategy) or callable(fallback)):
        raise ConfigurationError(
            "fallback must be callable or a FallbackStrategy", field="fallback"
        )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        get_user = _user_id_getter(func, user_id)

        def decide_inputs(args: Any, kwargs: Any) -> tuple[Any, Mapping[str, Any] | None]:
            return get_user(*args, **kwargs), (context(*args, **kwargs) if context else None)

        def refused(evaluation: FlagEvaluation) -> FeatureDisabledError:
            return FeatureDisabledError(name, reason=evaluation.reason)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                uid, ctx = decide_inputs(args, kwargs)
                evaluation = await _flags_of(flags).evaluate_async(name, uid, ctx)
                if evaluation.enabled:
                    return await cast(Any, func)(*args, **kwargs)
                if fallback is None:
                    raise refused(evaluation)
                if isinstance(fallback, FallbackStrategy):
                    ctx_call = FallbackContext(name, args, kwargs, refused(evaluation))
                    return await serve_chain((fallback,), ctx_call)
                value = fallback(*args, **kwargs)
                return await value if inspect.isawaitable(value) else value

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            uid, ctx = decide_inputs(args, kwargs)
            evaluation = _flags_of(flags).evaluate(name, uid, ctx)
            if evaluation.enabled:
                return func(*args, **kwargs)
            if fallback is None:
                raise refused(evaluation)
            if isinstance(fallback, FallbackStrategy):
                ctx_call = FallbackContext(name, args, kwargs, refused(evaluation))
                return cast(R, serve_chain_sync((fallback,), ctx_call))
            return cast(R, fallback(*args, **kwargs))

        return run_sync

    return decorate
