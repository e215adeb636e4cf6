"""ThreadedQueueManager: the same queue for threaded code (WSGI apps, scripts, workers).

It drives the same :class:`~sergas_guard.queueing.core.QueueCore` as the asyncio
:class:`~sergas_guard.queueing.manager.QueueManager`, under one lock, with
``max_workers`` daemon threads. Functions are called in those threads; a coroutine
function is refused (give it to the asyncio face). A thread cannot be interrupted, so a
call that runs past its deadline finishes, its result is discarded and it counts as timed
out; ``stop``'s deadline likewise hands back what is queued and leaves running calls to
end on their own (they are counted when they do).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sergas_guard import validation
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError, GuardError, QueueItemRejected
from sergas_guard.queueing.core import Outcome, Settled
from sergas_guard.queueing.discipline import Entry
from sergas_guard.queueing.face import QueueFace
from sergas_guard.queueing.job import (
    Job,
    ReturnedItem,
    checked_callable,
    is_async_callable,
    unrun_error,
)
from sergas_guard.queueing.policy import LimitPolicy

__all__ = ["ThreadedQueueManager"]

R = TypeVar("R")


class ThreadedQueueManager(QueueFace):
    """The threaded face of the queue: same parameters and metrics as QueueManager."""

    def __init__(
        self,
        name: str,
        max_size: int = 1000,
        max_workers: int = 10,
        timeout: float | None = 30.0,
        *,
        limit: str | LimitPolicy = "fixed",
        target_delay: float = 0.005,
        interval: float = 0.1,
        codel: bool = True,
        adaptive_lifo: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """Raises ConfigurationError naming the field for any bad setting."""
        super().__init__(
            name,
            max_size,
            max_workers,
            timeout,
            limit=limit,
            target_delay=target_delay,
            interval=interval,
            codel=codel,
            adaptive_lifo=adaptive_lifo,
            clock=clock,
        )
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the worker threads (again: nothing). Raises GuardError once stopped."""
        with self._changed:
            if self._state == "running":
                return
            if self._state != "new":
                raise GuardError(f"queue {self.name!r} was stopped; build a new one")
            self._state = "running"
            self._threads = [
                threading.Thread(target=self._work, name=f"{self.name}-worker-{n}", daemon=True)
                for n in range(self._core.max_workers)
            ]
        for thread in self._threads:
            thread.start()

    def enqueue(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> bool:
        """Queue ``fn(*args, **kwargs)``; False at once when full or stopped (never waits).

        Raises ConfigurationError when ``fn`` is not a plain callable or ``priority`` is
        not a whole number.
        """
        return self._admit(fn, args, kwargs, priority, request_id, None) is not None

    def submit(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> Future[R]:
        """Queue ``fn(*args, **kwargs)`` and return a future for its result.

        ``future.cancel()`` withdraws a queued item at once. Raises QueueItemRejected (``"full"``
        or ``"closed"``) when refused, ConfigurationError for a bad ``fn`` or ``priority``.
        """
        future: Future[R] = Future()
        entry = self._admit(fn, args, kwargs, priority, request_id, future)
        if entry is None:
            reason = "closed" if self._core.closed else "full"
            raise QueueItemRejected(self.name, reason=reason, request_id=request_id)
        future.add_done_callback(lambda done: done.cancelled() and self._withdraw(entry))
        return future

    def cancel(self, request_id: str) -> int:
        """Withdraw every queued item named ``request_id`` (running calls cannot be
        interrupted); how many were."""
        cancelled: list[Entry[Job]] = []
        with self._changed:
            now = self._monotonic()
            for entry in self._core.named(request_id):
                if self._core.cancel(entry, now):
                    cancelled.append(entry)
        for entry in cancelled:
            if entry.payload.future is not None:
                entry.payload.future.cancel()
        return len(cancelled)

    def stop(self, drain: bool = True, deadline: float | None = None) -> list[ReturnedItem]:
        """Stop taking items, end the workers and return the items handed back unrun.

        As :meth:`QueueManager.stop`, except that calls still running at the deadline are
        not interrupted: they finish in their threads and are counted then.
        """
        if deadline is not None:
            deadline = validation.seconds(deadline, "deadline", allow_zero=True)
        returned: list[Entry[Job]] = []
        with self._changed:
            if self._state == "stopped":
                return []
            self._state = "stopping"
            self._core.close()
            if not drain or not self._threads:
                returned += self._core.hand_back(self._monotonic())
            self._changed.notify_all()
        end = None if deadline is None else self._monotonic() + deadline
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - self._monotonic()))
        with self._changed:
            returned += self._core.hand_back(self._monotonic())
            self._state = "stopped"
        for entry in returned:
            future = entry.payload.future
            if future is not None and future.set_running_or_notify_cancel():
                future.set_exception(
                    QueueItemRejected(self.name, reason="returned", request_id=entry.request_id)
                )
        return self._returned(returned)

    def get_metrics(self) -> dict[str, Any]:
        """The same metrics as :meth:`QueueManager.get_metrics`."""
        with self._changed:
            return self._metrics()

    # -- internals -----------------------------------------------------------------------------

    def _admit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        request_id: str | None,
        future: Future[Any] | None,
    ) -> Entry[Job] | None:
        if is_async_callable(checked_callable(fn)):
            raise ConfigurationError(
                "fn is a coroutine function: give it to the asyncio QueueManager", field="fn"
            )
        job = Job(fn, args, kwargs, False, future)
        if type(priority) is not int:
            priority = validation.whole(priority, "priority")
        with self._changed:
            entry, purged = self._core.admit(job, priority, request_id, self._monotonic())
            if entry is not None:
                self._changed.notify()
        self._settle(purged)
        return entry

    def _withdraw(self, entry: Entry[Job]) -> bool:
        with self._changed:
            return self._core.cancel(entry, self._monotonic())

    def _work(self) -> None:
        core = self._core
        monotonic = self._monotonic
        while True:
            with self._changed:
                while True:
                    entry, dropped = core.next_entry(monotonic())
                    if entry is not None or self._state != "running":
                        break
                    if dropped:
                        break  # settle them outside the lock, then look again
                    self._changed.wait()
            self._settle(dropped)
            if entry is None:
                if self._state != "running":
                    return
                continue
            self._run(entry)

    def _run(self, entry: Entry[Job]) -> None:
        job = entry.payload
        future = job.future
        if future is not None and not future.set_running_or_notify_cancel():
            self._end(entry, Outcome.REJECTED, "cancelled")  # cancelled while queued
            return
        error: BaseException | None = None
        try:
            result = job.fn(*job.args, **job.kwargs)
        except Exception as exc:  # a failing item must never take its worker down
            outcome, error, result = Outcome.FAILED, exc, None
        else:
            outcome = Outcome.DONE
        if self._monotonic() > entry.deadline:
            outcome = Outcome.TIMED_OUT
            error = unrun_error(self.name, self._core.timeout, entry.request_id, True, "")
        self._end(entry, outcome, "")
        if future is not None:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _end(self, entry: Entry[Job], outcome: Outcome, reason: str) -> None:
        with self._changed:
            before = self._core.limit
            after = self._core.finish(entry, outcome, self._monotonic(), reason)
            if after > before:
                self._changed.notify(after - before)

    def _settle(self, settled: list[Settled[Job]]) -> None:
        timeout = self._core.timeout
        for entry, outcome, reason in settled:
            future = entry.payload.future
            if future is not None and future.set_running_or_notify_cancel():
                timed_out = outcome is Outcome.TIMED_OUT
                future.set_exception(
                    unrun_error(self.name, timeout, entry.request_id, timed_out, reason)
                )
