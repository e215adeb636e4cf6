"""Stateful property: random calls, outcomes, durations, manual moves and clock steps.

One machine drives the in-process store (the Python core) alone, then the in-process
store and the Redis store (its Lua twin, on a real redis-server with the clock passed
in) in lockstep: every decision, event and snapshot of the twins must be equal, and
all must agree with the naive reference model after every step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sergas_guard.circuit_breaker import CircuitBreakerConfig, CircuitState
from sergas_guard.circuit_breaker.core import Decision
from sergas_guard.circuit_breaker.store import BreakerHandle, BreakerStore, LocalBreakerStore
from sergas_guard.clock import ManualClock
from tests.circuit_breaker.reference_model import BreakerModel, ModelCall

StoreFactory = Callable[[ManualClock], BreakerStore]
T = TypeVar("T")


@st.composite
def configs(draw: st.DrawFn) -> CircuitBreakerConfig:
    window_type = draw(st.sampled_from(["count", "time"]))
    window_size = draw(st.integers(1, 6))
    minimum_calls = draw(st.integers(1, window_size if window_type == "count" else 8))
    base_wait = draw(st.sampled_from([1.0, 2.5]))
    return CircuitBreakerConfig(
        window_type=window_type,
        window_size=window_size,
        minimum_calls=minimum_calls,
        failure_rate_threshold=draw(st.sampled_from([20.0, 50.0, 100.0])),
        slow_call_duration=draw(st.sampled_from([0.5, 2.0])),
        slow_call_rate_threshold=draw(st.sampled_from([50.0, 100.0])),
        wait_duration_in_open=base_wait,
        wait_backoff_multiplier=draw(st.sampled_from([1.0, 2.0])),
        max_wait_duration_in_open=draw(st.sampled_from([None, 4.0])),
        permitted_calls_in_half_open=draw(st.integers(1, 3)),
        max_wait_in_half_open=draw(st.sampled_from([0.0, 3.0])),
        probe_timeout=draw(st.sampled_from([2.0, 5.0])),
        shared_state_max_calls=draw(st.integers(1, 3)),
    )


def machine_for(*make_stores: StoreFactory) -> type[RuleBasedStateMachine]:
    """A machine driving one breaker in each store in lockstep, against the model.

    With several stores every decision, event list and snapshot must be *equal*
    across them (exact floats included): that is the differential test of the twins.
    """

    class BreakerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = ManualClock()
            self.stores = [make(self.clock) for make in make_stores]
            self.handles: list[BreakerHandle] = []
            self.name = f"m-{uuid.uuid4().hex}"
            self.model: BreakerModel | None = None
            self.config = CircuitBreakerConfig()
            self.running: list[tuple[list[Decision], ModelCall]] = []

        @property
        def now(self) -> float:
            return self.clock.monotonic()

        @initialize(config=configs())
        def configure(self, config: CircuitBreakerConfig) -> None:
            self.config = config
            self.handles = [store.handle(self.name, config) for store in self.stores]
            self.model = BreakerModel(config, since=self.now)

        def expected(self) -> BreakerModel:
            assert self.model is not None
            return self.model

        def each(self, operation: Callable[[BreakerHandle], T]) -> T:
            """Apply ``operation`` to every handle; they must all answer the same."""
            answers = [operation(handle) for handle in self.handles]
            assert all(answer == answers[0] for answer in answers[1:]), answers
            return answers[0]

        @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 7.0]))
        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @rule()
        def start_call(self) -> None:
            self.admit()

        def admit(self) -> bool:
            answers = [(d, list(events)) for d, events in (h.acquire_sync() for h in self.handles)]
            assert all(answer == answers[0] for answer in answers[1:]), answers
            decision = answers[0][0]
            admitted = self.expected().acquire(self.now)
            assert decision.permitted == (admitted is not None)
            if admitted is None:
                assert decision.retry_after == pytest.approx(self.expected().retry_after(self.now))
                return False
            self.running.append(([answer[0] for answer in answers], admitted))
            return True

        @rule(
            outcome=st.sampled_from(["success", "failure", "ignored"]),
            duration=st.sampled_from([0.0, 3.0]),
        )
        def call(self, outcome: str, duration: float) -> None:
            """A whole call (start and finish at once), so runs reach open and half-open."""
            if self.admit():
                self.finish_call(len(self.running) - 1, outcome, duration)

        @precondition(lambda self: bool(self.running))
        @rule(
            index=st.integers(0, 20),
            outcome=st.sampled_from(["success", "failure", "ignored"]),
            duration=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
        )
        def finish_call(self, index: int, outcome: str, duration: float) -> None:
            decisions, admitted = self.running.pop(index % len(self.running))
            pairs = list(zip(self.handles, decisions, strict=True))
            if outcome == "ignored":
                events = [list(handle.release_sync(decision)) for handle, decision in pairs]
                self.expected().release(self.now, admitted)
            else:
                failed = outcome == "failure"
                events = [
                    list(handle.record_sync(decision, duration, failed))
                    for handle, decision in pairs
                ]
                self.expected().record(self.now, admitted, duration, failed)
            assert all(answer == events[0] for answer in events[1:]), events

        @rule(state=st.sampled_from(list(CircuitState)))
        def move_by_hand(self, state: CircuitState) -> None:
            self.each(lambda handle: list(handle.transition_sync(state)))
            self.expected().transition(self.now, state)

        @rule()
        def reset(self) -> None:
            self.each(lambda handle: list(handle.transition_sync(None)))
            self.expected().reset(self.now)

        @invariant()
        def agrees_with_the_model(self) -> None:
            if self.model is None:
                return
            snapshot = self.each(lambda handle: handle.snapshot_sync()[0])
            model = self.model
            calls, failed, slow = model.counts(self.now)
            assert snapshot.state is model.state
            assert (snapshot.buffered_calls, snapshot.failed_calls, snapshot.slow_calls) == (
                calls,
                failed,
                slow,
            )
            assert snapshot.rejected_calls == model.rejected
            assert snapshot.not_permitted_calls == model.not_permitted
            assert snapshot.probes_in_flight == len(model.probes)
            assert snapshot.consecutive_opens == model.opens
            if snapshot.state.refuses_calls:
                assert snapshot.retry_after == pytest.approx(model.retry_after(self.now))
            assert snapshot.probes_in_flight <= self.config.permitted_calls_in_half_open

    return BreakerMachine


def test_the_python_core_follows_the_rules() -> None:
    run_state_machine_as_test(
        machine_for(LocalBreakerStore),
        settings=settings(max_examples=250, stateful_step_count=50, deadline=None),
    )


@pytest.mark.redis
def test_the_lua_twin_decides_exactly_as_the_python_core(redis_url: str) -> None:
    """Three in lockstep: the core, the bare Lua twin, and the Redis handle breakers use.

    The last decides what it can from the state its last reply carried (CLOSED and
    OPEN calls without a round trip); alone in its process, that must change nothing.
    """
    from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
    from sergas_guard.ratelimit.stores.redis import RedisStorage

    storage = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    # Its own key prefix: the two Redis participants must not share a key.
    cached = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0, key_prefix="c")
    try:
        run_state_machine_as_test(
            machine_for(
                LocalBreakerStore,
                lambda clock: RedisBreakerStore(storage, clock=clock, cache_state=False),
                lambda clock: RedisBreakerStore(cached, clock=clock),
            ),
            settings=settings(max_examples=80, stateful_step_count=40, deadline=None),
        )
    finally:
        storage.close_sync()
        cached.close_sync()
