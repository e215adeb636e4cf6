"""A shared breaker for one process: local decisions from the last reply, steps in the store.

:class:`SharedBreakerHandle` is the :class:`~sergas_guard.circuit_breaker.store.BreakerHandle`
breakers use over a shared store. It asks its :class:`~.shared_view.SharedView` first;
only what the view cannot decide becomes a step in the store, and every step's reply
refreshes the view. So a call in the steady state (CLOSED) costs one round trip, its
outcome; a refusal while OPEN costs none. The store's steps themselves (the I/O) sit
behind :class:`StepRunner`, which ``redis_store`` implements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import Decision, Snapshot
from sergas_guard.circuit_breaker.shared_view import SharedView, StoreState
from sergas_guard.circuit_breaker.state import CircuitState
from sergas_guard.circuit_breaker.store import Events
from sergas_guard.errors import StorageUnavailable

__all__ = ["SharedBreakerHandle", "StepReply", "StepRunner", "outcome_args", "transition_args"]


class StepReply(Protocol):
    """What one step in the store answers."""

    @property
    def decision(self) -> Decision: ...

    @property
    def events(self) -> Events: ...

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def store_state(self) -> StoreState: ...


class StepRunner(Protocol):
    """Runs one step of the breaker script in the store: one round trip.

    ``op`` and ``extra`` are the script's operation and arguments; ``refused`` counts
    calls this process refused on its own, added to the shared count. Raises
    :class:`~sergas_guard.errors.StorageUnavailable` when the store cannot answer.
    """

    kind: str

    def run_sync(self, op: str, extra: Sequence[str] = (), refused: int = 0) -> StepReply: ...

    async def run(self, op: str, extra: Sequence[str] = (), refused: int = 0) -> StepReply: ...


def outcome_args(decision: Decision, duration: float, failed: bool) -> list[str]:
    """The script's arguments of ``record``/``release`` for a call ``decision`` admitted."""
    return [str(decision.generation), str(decision.probe), repr(duration), "1" if failed else "0"]


def transition_args(target: CircuitState | None) -> tuple[str, list[str]]:
    """The script's operation and arguments of a manual move (None = reset)."""
    if target is None:
        return "reset", []
    return "transition", ["0", "0", "0", "0", target.value]


class SharedBreakerHandle:
    """One shared breaker as this process sees it: a view of its state, and steps in the store.

    ``now`` is this process's monotonic clock (it dates the view; the store times the
    breaker). The lock guards the view only and is never held across I/O.
    """

    __slots__ = ("_lock", "_now", "kind", "steps", "view")

    def __init__(
        self,
        steps: StepRunner,
        name: str,
        config: CircuitBreakerConfig,
        now: Callable[[], float],
    ) -> None:
        self.steps = steps
        self.kind = steps.kind
        self.view = SharedView(name, config)
        self._lock = threading.Lock()
        self._now = now

    def _begin(self) -> tuple[float, int]:
        with self._lock:
            return self._now(), self.view.take_refused()

    def _end(self, sent_at: float, reply: StepReply, settled: Decision | None) -> None:
        with self._lock:
            self.view.learn(sent_at, reply.store_state)
            if settled is not None:
                self.view.settled(settled)

    def _failed(self, error: BaseException, refused: int, settled: Decision | None) -> None:
        with self._lock:
            if settled is not None:
                self.view.settled(settled)
            if isinstance(error, StorageUnavailable):
                self.view.give_back_refused(refused)
                self.view.forget()

    def _step_sync(
        self, op: str, extra: Sequence[str] = (), settled: Decision | None = None
    ) -> StepReply:
        sent_at, refused = self._begin()
        try:
            reply = self.steps.run_sync(op, extra, refused)
        except BaseException as error:
            self._failed(error, refused, settled)
            raise
        self._end(sent_at, reply, settled)
        return reply

    async def _step(
        self, op: str, extra: Sequence[str] = (), settled: Decision | None = None
    ) -> StepReply:
        sent_at, refused = self._begin()
        try:
            reply = await self.steps.run(op, extra, refused)
        except BaseException as error:  # cancellation too: the call no longer runs
            self._failed(error, refused, settled)
            raise
        self._end(sent_at, reply, settled)
        return reply

    def _decide(self) -> tuple[Decision, Events] | None:
        with self._lock:
            return self.view.decide(self._now())

    # -- the BreakerHandle protocol --------------------------------------------------------

    def acquire_sync(self) -> tuple[Decision, Events]:
        decided = self._decide()
        if decided is not None:
            return decided
        reply = self._step_sync("acquire")
        return reply.decision, reply.events

    async def acquire(self) -> tuple[Decision, Events]:
        decided = self._decide()
        if decided is not None:
            return decided
        reply = await self._step("acquire")
        return reply.decision, reply.events

    def record_sync(self, decision: Decision, duration: float, failed: bool) -> Events:
        return self._step_sync("record", outcome_args(decision, duration, failed), decision).events

    async def record(self, decision: Decision, duration: float, failed: bool) -> Events:
        extra = outcome_args(decision, duration, failed)
        return (await self._step("record", extra, decision)).events

    def release_sync(self, decision: Decision) -> Events:
        return self._step_sync("release", outcome_args(decision, 0.0, False), decision).events

    async def release(self, decision: Decision) -> Events:
        return (await self._step("release", outcome_args(decision, 0.0, False), decision)).events

    def transition_sync(self, target: CircuitState | None) -> Events:
        return self._step_sync(*transition_args(target)).events

    async def transition(self, target: CircuitState | None) -> Events:
        return (await self._step(*transition_args(target))).events

    def snapshot_sync(self) -> tuple[Snapshot, Events]:
        reply = self._step_sync("snapshot")
        return reply.snapshot, reply.events

    async def snapshot(self) -> tuple[Snapshot, Events]:
        reply = await self._step("snapshot")
        return reply.snapshot, reply.events
