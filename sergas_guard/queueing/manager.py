"""QueueManager: a bounded priority queue run by a pool of asyncio workers.

The face of :class:`~sergas_guard.queueing.core.QueueCore` for asyncio: ``max_workers``
worker tasks take items as the core's discipline and concurrency limit allow and run
them. Coroutine functions are awaited on the loop; plain functions run in the loop's
executor (a thread), so a blocking call never stalls the loop. ``request_id`` names an
item for :meth:`QueueManager.cancel` and for messages; it is not passed to the function.
Lower ``priority`` numbers run first (0 before 1; negative numbers jump ahead).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar, overload

from sergas_guard import validation
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import GuardError, QueueItemRejected
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

__all__ = ["QueueHandle", "QueueManager"]

logger = logging.getLogger("sergas_guard.queueing")

R = TypeVar("R")


class QueueHandle(Generic[R]):
    """What :meth:`QueueManager.submit` returns: await it for the item's result.

    Awaiting raises what the function raised, :class:`QueueItemTimeout` when its deadline
    passed, :class:`QueueItemRejected` when the queue dropped it or handed it back, and
    ``asyncio.CancelledError`` once :meth:`cancel` took effect.
    """

    __slots__ = ("_entry", "_future", "_manager")

    def __init__(self, manager: QueueManager, entry: Entry[Job], future: asyncio.Future[R]) -> None:
        self._manager = manager
        self._entry = entry
        self._future = future

    @property
    def request_id(self) -> str | None:
        return self._entry.request_id

    def __await__(self) -> Generator[Any, None, R]:
        return self._future.__await__()

    def done(self) -> bool:
        """Whether the item has ended (in any outcome)."""
        return self._future.done()

    def cancel(self) -> bool:
        """Cancel the item: a queued one is removed, a running one is cancelled (a plain
        function's thread runs on, its result discarded). False once it has ended."""
        return self._manager._cancel_entry(self._entry)


class QueueManager(QueueFace):
    """A bounded priority queue with a pool of workers, CoDel deadlines and a concurrency limit.

    ``timeout`` is each item's deadline from acceptance (queued and running time together;
    None for none); ``limit`` a policy name (``"fixed"``, ``"aimd"``, ``"gradient2"``,
    ``"vegas"``) or a :class:`LimitPolicy`; ``target_delay`` / ``interval`` the CoDel
    parameters; ``clock`` the source of monotonic time.
    """

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
        executor: Executor | None = None,
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
        self._executor = executor
        self._workers: list[asyncio.Task[None]] = []
        self._idle: deque[asyncio.Future[None]] = deque()
        self._running: set[Entry[Job]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_until = math.inf  # when the watchdog fires (inf: not armed)

    # -- the public face -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (again: nothing). Raises GuardError once the queue was stopped."""
        if self._state == "running":
            return
        if self._state != "new":
            raise GuardError(f"queue {self.name!r} was stopped; build a new one")
        self._state = "running"
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{n}")
            for n in range(self._core.max_workers)
        ]

    async def enqueue(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> bool:
        """Queue ``fn(*args, **kwargs)``; False at once when the queue is full or stopped.

        Never waits for room. A failure of ``fn`` is counted and logged, never raised here
        (use :meth:`submit` to get the result or the exception). Raises ConfigurationError
        when ``fn`` is not callable or ``priority`` not a whole number.
        """
        return self._admit(fn, args, kwargs, priority, request_id, None) is not None

    @overload
    def submit(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> QueueHandle[R]: ...

    @overload
    def submit(
        self,
        fn: Callable[..., R],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> QueueHandle[R]: ...

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        priority: int = 0,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> QueueHandle[Any]:
        """Queue ``fn(*args, **kwargs)`` and return a handle to await its result.

        Must be called with a running event loop. Raises QueueItemRejected (reason
        ``"full"`` or ``"closed"``) at once when the queue refuses it, and ConfigurationError
        when ``fn`` is not callable or ``priority`` not a whole number.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = self._admit(fn, args, kwargs, priority, request_id, future)
        if entry is None:
            reason = "closed" if self._core.closed else "full"
            raise QueueItemRejected(self.name, reason=reason, request_id=request_id)
        # Cancelling the future itself (asyncio.wait_for does on timeout) cancels the item.
        future.add_done_callback(lambda done: done.cancelled() and self._cancel_entry(entry))
        return QueueHandle(self, entry, future)

    def cancel(self, request_id: str) -> int:
        """Cancel every queued or running item named ``request_id``; how many were."""
        return sum(self._cancel_entry(entry) for entry in self._core.named(request_id))

    async def stop(self, drain: bool = True, deadline: float | None = None) -> list[ReturnedItem]:
        """Stop taking items and end the workers; return the items handed back unrun.

        With ``drain`` the queued items still run, otherwise they are handed back at once;
        running items may finish. After ``deadline`` seconds (None: no limit) what is still
        queued is handed back and what still runs is cancelled (counted as rejected:
        stopped). Handles of returned items raise QueueItemRejected(reason="returned").
        Stopping twice returns nothing the second time.
        """
        if deadline is not None:
            deadline = validation.seconds(deadline, "deadline", allow_zero=True)
        if self._state == "stopped":
            return []
        if self._state == "stopping":  # another stop is under way: wait for it to end
            if self._workers:
                await asyncio.wait(self._workers, timeout=deadline)
            return []
        self._state = "stopping"
        self._core.close()
        returned: list[Entry[Job]] = []
        if not drain or not self._workers:
            returned += self._core.hand_back(self._monotonic())
        self._wake(len(self._idle))
        pending: set[asyncio.Task[None]] = set()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=deadline)
        if pending:
            returned += self._core.hand_back(self._monotonic())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._state = "stopped"
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for entry in returned:
            self._resolve(
                entry, QueueItemRejected(self.name, reason="returned", request_id=entry.request_id)
            )
        return self._returned(returned)

    def get_metrics(self) -> dict[str, Any]:
        """The seed's queue metrics (name, queue_size, max_size, utilization_percent,
        active_workers, processed_count, failed_count, timeout_count) and the detailed
        ones: depth, capacity, utilization, in_flight, limit, rejected by reason,
        p50/p99 time in queue and service time (seconds), seconds since last empty."""
        return self._metrics()

    # -- admission and settling ------------------------------------------------------------

    def _admit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int,
        request_id: str | None,
        future: asyncio.Future[Any] | None,
    ) -> Entry[Job] | None:
        if not callable(fn):
            checked_callable(fn)  # raises, naming the field
        job = Job(fn, args, kwargs, is_async_callable(fn), future)
        if type(priority) is not int:
            priority = validation.whole(priority, "priority")
        entry, purged = self._core.admit(job, priority, request_id, self._monotonic())
        if purged:
            self._settle(purged)
        if entry is None:
            return None
        if self._idle:
            self._wake(1)
        return entry

    def _wake(self, count: int) -> None:
        while count > 0 and self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _cancel_entry(self, entry: Entry[Job]) -> bool:
        job = entry.payload
        if entry in self._running:
            if job.cancel_requested or job.expired or job.runner is None:
                return False
            job.cancel_requested = True
            job.runner.cancel()
            return True
        if not self._core.cancel(entry, self._monotonic()):
            return False
        if job.future is not None and not job.future.done():
            job.future.cancel()
        return True

    def _settle(self, settled: list[Settled[Job]]) -> None:
        timeout = self._core.timeout
        for entry, outcome, reason in settled:
            timed_out = outcome is Outcome.TIMED_OUT
            self._resolve(
                entry, unrun_error(self.name, timeout, entry.request_id, timed_out, reason)
            )

    def _resolve(self, entry: Entry[Job], error: BaseException | None, result: Any = None) -> None:
        future = entry.payload.future
        if future is None or future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    # -- the workers -------------------------------------------------------------------------

    async def _work(self) -> None:
        core = self._core
        monotonic = self._monotonic
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            entry, dropped = core.next_entry(monotonic())
            if dropped:
                self._settle(dropped)
            if entry is None:
                if self._state != "running":
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            entry.payload.runner = task
            await self._run(entry)  # never raises but for the worker's own cancellation

    async def _run(self, entry: Entry[Job]) -> None:
        job = entry.payload
        self._running.add(entry)
        if entry.deadline < self._watch_until:
            self._watch(entry.deadline)
        outcome = Outcome.DONE
        reason = ""
        result: Any = None
        error: BaseException | None = None
        try:
            if job.is_async:
                result = await job.fn(*job.args, **job.kwargs)
            else:
                call = functools.partial(job.fn, *job.args, **job.kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except asyncio.CancelledError:
            if not (job.expired or job.cancel_requested):
                # The worker itself is being cancelled (stop's deadline): record, then go.
                self._end(entry, Outcome.REJECTED, "stopped", None, _stopped(self.name, entry))
                raise
            if job.cancel_requested:
                outcome, reason, error = Outcome.REJECTED, "cancelled", asyncio.CancelledError()
        except Exception as exc:  # a failing item must never take its worker down
            outcome, error = Outcome.FAILED, exc
            if job.future is None:
                logger.warning(
                    "queue %r: item %r failed", self.name, entry.request_id, exc_info=exc
                )
        if job.expired or job.cancel_requested:
            # The cancellation was for the item, not the worker: the worker carries on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            if job.expired and not job.cancel_requested:
                # Past its deadline: even a result it managed to return is discarded.
                outcome, result = Outcome.TIMED_OUT, None
                error = unrun_error(self.name, self._core.timeout, entry.request_id, True, "")
        self._end(entry, outcome, reason, result, error)

    def _watch(self, deadline: float) -> None:
        """Have the watchdog fire by ``deadline``.

        One timer for the whole pool, armed for the earliest deadline among running items,
        instead of one per item: with a uniform timeout items mostly start in deadline
        order, so starting one rarely re-arms it, and the per-item cost is a comparison.
        """
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_until = deadline
        delay = max(0.0, deadline - self._monotonic())
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._expire_overdue)

    def _expire_overdue(self) -> None:
        self._watchdog = None
        self._watch_until = math.inf
        now = self._monotonic()
        earliest = math.inf
        for entry in self._running:
            job = entry.payload
            if entry.deadline <= now:
                if not (job.expired or job.cancel_requested) and job.runner is not None:
                    job.expired = True
                    job.runner.cancel()
            elif entry.deadline < earliest:
                earliest = entry.deadline
        if earliest < math.inf:
            self._watch(earliest)

    def _end(
        self,
        entry: Entry[Job],
        outcome: Outcome,
        reason: str,
        result: Any,
        error: BaseException | None,
    ) -> None:
        self._running.discard(entry)
        entry.payload.runner = None
        core = self._core
        before = core.limit
        after = core.finish(entry, outcome, self._monotonic(), reason)
        future = entry.payload.future
        if future is not None and not future.done():
            if error is None:
                future.set_result(result)
            elif isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
        if after > before and self._idle:
            self._wake(after - before)


def _stopped(queue: str, entry: Entry[Job]) -> QueueItemRejected:
    return QueueItemRejected(queue, reason="stopped", request_id=entry.request_id)
