"""Blocking work off the event loop, in daemon threads that cannot pile up.

``asyncio.to_thread`` would do, except for a check that blocks for ever: the
default executor keeps the stuck worker, a new one is taken on every run until
the pool is exhausted, and the loop cannot shut down while they hang. Here each
owner runs at most one thread at a time, and the thread is a daemon, so a stuck
dependency costs one thread per check, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sergas_guard.errors import HealthCheckError

__all__ = ["StillRunningError", "SyncRunner"]

T = TypeVar("T")


class StillRunningError(HealthCheckError):
    """The previous run of a blocking check has not returned yet."""


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting side gave up (timeout or cancellation)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class SyncRunner:
    """Runs one blocking callable at a time in a daemon thread and awaits its outcome."""

    def __init__(self, name: str) -> None:
        self._name = name
        # Cleared by the worker before it reports back, so the next run never sees a
        # thread that has finished its work but not yet exited.
        self._busy = threading.Event()

    @property
    def busy(self) -> bool:
        """True while a previous call is still running in its thread."""
        return self._busy.is_set()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Call ``func(*args)`` in a daemon thread; raises StillRunningError if one still runs."""
        if self.busy:
            raise StillRunningError(f"the previous run of {self._name!r} has not returned yet")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def target() -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                value = func(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, not lost
                error = exc
            self._busy.clear()
            # RuntimeError: the loop closed while we were blocked, so nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, value, error)

        self._busy.set()
        threading.Thread(target=target, name=f"health:{self._name}", daemon=True).start()
        return await future
