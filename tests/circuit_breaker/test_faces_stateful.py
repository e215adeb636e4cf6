"""Stateful property: whole calls through every face of ``CircuitBreaker`` follow the rules.

``test_stateful`` drives the stores; this drives what users hold (``call_sync``,
``await call`` with sync and async functions, both decorators, ``with`` and
``async with``), whose closed path takes the core's free pass and records without the
store's interface. Calls succeed, fail, raise an ignored exception or return a value
``record_result`` calls a failure, and last a random time on the manual clock; after
every step the breaker's metrics must agree with the naive reference model.

Three set-ups: the breaker and its store on one clock (the closed fast path), a
``MemoryStorage`` on a second clock moved in lockstep (the path through the store), and
a real redis-server on that second clock (the shared handle, which decides CLOSED and
OPEN calls from the state its last reply carried: alone, it must follow the rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sergas_guard.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitOpenError,
    CircuitState,
    EventKind,
)
from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
from sergas_guard.clock import ManualClock
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.circuit_breaker.reference_model import BreakerModel
from tests.circuit_breaker.test_stateful import configs

FACES = (
    "call_sync",
    "sync_decorator",
    "with",
    "await_call_sync_fn",
    "await_call_async_fn",
    "async_decorator",
    "async_with",
)
# Context managers never see the value a call returns, so record_result cannot judge it.
BLIND_TO_RESULTS = {"with", "async_with"}


class Boom(Exception):
    """A failure."""


class Ignored(Exception):
    """Counts as neither success nor failure."""


def is_bad(result: object) -> bool:
    return result == "bad"


def machine_for(twin_clocks: bool, redis_url: str | None = None) -> type[RuleBasedStateMachine]:
    class FacesMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = ManualClock()
            self.store_clock = ManualClock() if twin_clocks else self.clock
            self.loop = asyncio.new_event_loop()
            self.model: BreakerModel | None = None
            self.breaker = CircuitBreaker("unused")
            self.plan = ("success", 0.0)
            self.events: list[CircuitBreakerEvent] = []
            self.faces: dict[str, Callable[[], object]] = {}
            self.redis: RedisStorage | None = None

        def teardown(self) -> None:
            if self.redis is not None:
                self.loop.run_until_complete(self.redis.aclose())
                self.redis.close_sync()
            self.loop.close()

        @property
        def now(self) -> float:
            return self.clock.monotonic()

        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)
            if self.store_clock is not self.clock:
                self.store_clock.advance(seconds)

        def body(self) -> str:
            outcome, duration = self.plan
            self.advance(duration)
            if outcome == "failure":
                raise Boom
            if outcome == "ignored":
                raise Ignored
            return "bad" if outcome == "bad_result" else "ok"

        async def async_body(self) -> str:
            await asyncio.sleep(0)  # a real suspension, as an I/O call would make
            return self.body()

        @initialize(config=configs())
        def configure(self, config: CircuitBreakerConfig) -> None:
            config = CircuitBreakerConfig.model_validate(
                {**config.model_dump(), "ignore_exceptions": (Ignored,), "record_result": is_bad}
            )
            storage: Any = MemoryStorage(clock=self.store_clock) if twin_clocks else None
            if redis_url is not None:
                # Per machine: its async client belongs to this machine's event loop.
                self.redis = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
                storage = RedisBreakerStore(self.redis, clock=self.store_clock)
            self.breaker = breaker = CircuitBreaker(
                f"faces-{uuid.uuid4().hex}",
                config,
                storage=storage,
                clock=self.clock,
                listeners=(self.events.append,),
            )
            self.model = BreakerModel(config, since=self.now)
            sync_decorated = breaker(self.body)
            async_decorated = breaker(self.async_body)
            run = self.loop.run_until_complete

            def with_face() -> object:
                with breaker:
                    return self.body()

            async def async_with_face() -> object:
                async with breaker:
                    return await self.async_body()

            self.faces = {
                "call_sync": lambda: breaker.call_sync(self.body),
                "sync_decorator": sync_decorated,
                "with": with_face,
                "await_call_sync_fn": lambda: run(breaker.call(self.body)),
                "await_call_async_fn": lambda: run(breaker.call(self.async_body)),
                "async_decorator": lambda: run(async_decorated()),
                "async_with": lambda: run(async_with_face()),
            }

        def expected(self) -> BreakerModel:
            assert self.model is not None
            return self.model

        @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 7.0]))
        def wait(self, seconds: float) -> None:
            self.advance(seconds)

        @rule(
            face=st.sampled_from(FACES),
            outcome=st.sampled_from(["success", "failure", "ignored", "bad_result"]),
            duration=st.sampled_from([0.0, 0.5, 3.0]),
        )
        def call(self, face: str, outcome: str, duration: float) -> None:
            model = self.expected()
            admitted = model.acquire(self.now)
            self.plan = (outcome, duration)
            refused: CircuitOpenError | None = None
            try:
                with contextlib.suppress(Boom, Ignored):
                    self.faces[face]()
            except CircuitOpenError as error:
                refused = error
            if refused is not None:
                assert admitted is None, "the breaker refused a call the rules admit"
                assert refused.retry_after == pytest.approx(model.retry_after(self.now))
                return
            assert admitted is not None, "the breaker ran a call the rules refuse"
            if outcome == "ignored":
                model.release(self.now, admitted)
            else:
                failed = outcome == "failure" or (
                    outcome == "bad_result" and face not in BLIND_TO_RESULTS
                )
                model.record(self.now, admitted, duration, failed)

        @rule(state=st.sampled_from(list(CircuitState)))
        def move_by_hand(self, state: CircuitState) -> None:
            getattr(self.breaker, f"transition_to_{state.value}")()
            self.expected().transition(self.now, state)

        @rule()
        def reset(self) -> None:
            self.breaker.reset()
            self.expected().reset(self.now)

        @invariant()
        def agrees_with_the_model(self) -> None:
            if self.model is None:
                return
            metrics = self.breaker.get_metrics()
            calls, failed, slow = self.model.counts(self.now)
            assert metrics["state"] == self.model.state.value
            assert (metrics["buffered_calls"], metrics["failed_calls"], metrics["slow_calls"]) == (
                calls,
                failed,
                slow,
            )
            assert metrics["rejected_calls"] == self.model.rejected
            assert metrics["not_permitted_calls"] == self.model.not_permitted
            assert metrics["probes_in_flight"] == len(self.model.probes)

        @invariant()
        def transitions_form_one_chain(self) -> None:
            moves = [e for e in self.events if e.kind is EventKind.STATE_TRANSITION]
            for earlier, later in itertools.pairwise(moves):
                assert earlier.to_state is later.from_state
            if moves and self.model is not None:
                assert moves[-1].to_state is self.model.state

    return FacesMachine


@pytest.mark.parametrize("twin_clocks", [False, True], ids=["one_clock", "store_on_its_own_clock"])
def test_every_face_follows_the_rules(twin_clocks: bool) -> None:
    run_state_machine_as_test(
        machine_for(twin_clocks),
        settings=settings(max_examples=120, stateful_step_count=40, deadline=None),
    )


@pytest.mark.redis
def test_every_face_follows_the_rules_on_redis(redis_url: str) -> None:
    run_state_machine_as_test(
        machine_for(True, redis_url),
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None),
    )
