"""What a queued item carries, and how callers get back what a stopped queue did not run."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sergas_guard.errors import ConfigurationError, GuardError, QueueItemRejected, QueueItemTimeout

__all__ = ["Job", "ReturnedItem", "checked_callable", "is_async_callable", "unrun_error"]


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine (coroutine functions, partials of them, and
    objects whose ``__call__`` is one)."""
    code = getattr(fn, "__code__", None)
    if code is not None:  # a function or a bound method: the flag answers, and fast
        return bool(code.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the bound __call__ of an object, not callable()
    )


def checked_callable(fn: object) -> Callable[..., Any]:
    """``fn`` if it can be called; ConfigurationError(field="fn") otherwise."""
    if not callable(fn):
        raise ConfigurationError(f"fn must be a function, not {type(fn).__name__}", field="fn")
    return fn


@dataclass(eq=False, slots=True)
class Job:
    """The call an item stands for, and the face's handle on it (a future, a task)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_async: bool
    future: Any = None  # asyncio.Future or concurrent.futures.Future, when someone waits
    runner: Any = None  # the asyncio task running it, while it runs
    cancel_requested: bool = False
    expired: bool = False  # its deadline passed while it ran


@dataclass(frozen=True, slots=True)
class ReturnedItem:
    """An accepted item a stopped queue hands back unrun: enough to run it elsewhere."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    priority: int
    request_id: str | None


def unrun_error(
    queue: str, timeout: float | None, request_id: str | None, timed_out: bool, reason: str
) -> GuardError:
    """What a caller waiting on an item that did not run to completion is told."""
    if timed_out:
        return QueueItemTimeout(queue, timeout=timeout or 0.0, request_id=request_id)
    return QueueItemRejected(queue, reason=reason, request_id=request_id)
