"""Stateful property: random enqueues, submits, cancels, outcomes, clock steps and stops.

A real QueueManager on a real event loop runs jobs that wait on gates the machine opens
(success or failure); a ManualClock moves CoDel and the deadlines. After every step each
accepted item is in exactly one place (done, failed, timed out, rejected, returned,
queued or running), no job ran twice, and the running ones stay within the limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sergas_guard.clock import ManualClock
from sergas_guard.errors import QueueItemRejected
from sergas_guard.queueing import QueueHandle, QueueManager

T = TypeVar("T")


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.queue = QueueManager(
            "machine", max_size=4, max_workers=3, timeout=1.0, limit="aimd", clock=self.clock
        )
        self.gates: dict[int, asyncio.Future[int]] = {}
        self.calls: Counter[int] = Counter()
        self.handles: dict[int, QueueHandle[int]] = {}
        self.refusals: Counter[str] = Counter()
        self.offered = 0
        self.accepted = 0
        self.started = False
        self.stopped = False

    # -- helpers -----------------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        result = self.loop.run_until_complete(coroutine)
        for _ in range(4):  # let the workers take and finish what they can
            self.loop.run_until_complete(asyncio.sleep(0))
        return result

    def job(self, number: int) -> Callable[[], Coroutine[Any, Any, int]]:
        async def gated() -> int:
            self.calls[number] += 1
            gate: asyncio.Future[int] = self.loop.create_future()
            self.gates[number] = gate
            return await gate

        return gated

    # -- rules -------------------------------------------------------------------------------

    @precondition(lambda self: not self.started and not self.stopped)
    @rule()
    def start(self) -> None:
        self.started = True
        self.run(self.queue.start())

    @rule(priority=st.integers(0, 2))
    def enqueue(self, priority: int) -> None:
        number = self.offered
        self.offered += 1
        ok = self.run(
            self.queue.enqueue(self.job(number), priority=priority, request_id=str(number))
        )
        self.accepted += ok
        assert ok or self.stopped or self.queue.core.depth == 4

    @rule(priority=st.integers(0, 2))
    def submit(self, priority: int) -> None:
        number = self.offered
        self.offered += 1

        async def submit() -> QueueHandle[int] | None:
            try:
                return self.queue.submit(
                    self.job(number), priority=priority, request_id=str(number)
                )
            except QueueItemRejected as refused:
                self.refusals[refused.reason] += 1
                return None

        handle = self.run(submit())
        if handle is not None:
            self.accepted += 1
            self.handles[number] = handle

    @rule(pick=st.integers(0, 40))
    def cancel(self, pick: int) -> None:
        if self.offered:
            self.queue.cancel(str(pick % self.offered))
            self.run(asyncio.sleep(0))

    def waiting(self) -> list[asyncio.Future[int]]:
        return [gate for gate in self.gates.values() if not gate.done()]

    @precondition(lambda self: self.waiting())
    @rule(pick=st.integers(0, 40), fail=st.booleans())
    def finish_a_job(self, pick: int, fail: bool) -> None:
        waiting = self.waiting()
        gate = waiting[pick % len(waiting)]
        if fail:
            gate.set_exception(ValueError("job failed"))
        else:
            gate.set_result(pick)
        self.run(asyncio.sleep(0))

    @precondition(lambda self: self.waiting())
    @rule()
    def finish_every_job(self) -> None:
        for gate in self.waiting():
            gate.set_result(0)
        self.run(asyncio.sleep(0))

    @rule(seconds=st.sampled_from([0.001, 0.001, 0.004, 0.05, 0.2, 1.5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: not self.stopped and self.offered >= 8)
    @rule(drain=st.booleans())
    def stop(self, drain: bool) -> None:
        self.stopped = True
        returned = self.run(self.queue.stop(drain=drain, deadline=0))
        assert self.queue.core.depth == 0
        assert self.queue.core.in_flight == 0
        assert self.queue.get_metrics()["returned"] >= len(returned)
        for handle in self.handles.values():
            assert handle.done()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def every_accepted_item_is_in_exactly_one_place(self) -> None:
        core = self.queue.core
        assert core.accepted == self.accepted
        assert set(self.refusals) <= {"full", "closed"}
        assert core.unaccounted() == 0

    @invariant()
    def no_job_runs_twice_and_the_limit_holds(self) -> None:
        assert all(count == 1 for count in self.calls.values())
        core = self.queue.core
        assert core.in_flight <= core.limit <= core.max_workers
        assert core.depth <= 4

    def teardown(self) -> None:
        try:
            if not self.stopped:
                self.run(self.queue.stop(drain=False, deadline=0))
            assert self.queue.core.unaccounted() == 0
            metrics = self.queue.get_metrics()
            ended = (
                metrics["processed"]
                + metrics["failed"]
                + metrics["timed_out"]
                + metrics["returned"]
                + sum(self.queue.core.rejected.values())
            )
            assert ended == self.accepted
            for handle in self.handles.values():
                assert handle.done()
                if not handle._future.cancelled():
                    handle._future.exception()  # retrieved: no "never retrieved" noise
        finally:
            self.loop.close()


def test_queue_accounting_under_random_operations() -> None:
    run_state_machine_as_test(
        QueueMachine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None)
    )
