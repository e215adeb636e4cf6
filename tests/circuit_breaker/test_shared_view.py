"""The bound of a process deciding from a cached shared state, as a property of SharedView.

A machine plays one process and the store: calls start (decided by the view or sent to
the store), finish (their outcome sent), the store runs pending requests in any order
(several connections) and their replies arrive in any order; once, a peer opens the
breaker. However the steps interleave, the process admits from its view at most
``shared_state_max_calls`` calls after the opening, none later than
``shared_state_max_age`` after it, and never once a reply from after the opening
has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

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

from sergas_guard.circuit_breaker import CircuitBreakerConfig, CircuitState, EventKind
from sergas_guard.circuit_breaker.core import Decision
from sergas_guard.circuit_breaker.shared_view import CachedPermit, SharedView, StoreState

WAIT = 10.0


@dataclass
class Request:
    op: str  # "acquire" or "record"
    sent_at: float
    decision: Decision | None = None  # the call whose outcome a record reports


@dataclass
class Reply:
    request: Request
    news: StoreState
    permit: Decision | None  # what an acquire got from the store


class ProcessAndStore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0  # one clock: the bound is about order, not skew
        self.view = SharedView("dep", CircuitBreakerConfig())
        self.max_age = self.max_calls = 0.0
        self.generation = 3
        self.opened_at: float | None = None
        self.running: list[Decision] = []
        self.pending: list[Request] = []
        self.replies: list[Reply] = []
        self.stale_admits = 0
        self.learnt_open = False

    @initialize(
        max_age=st.sampled_from([0.5, 1.0, 5.0]),
        max_calls=st.integers(1, 4),
        warm=st.booleans(),
    )
    def configure(self, max_age: float, max_calls: int, warm: bool) -> None:
        config = CircuitBreakerConfig(
            shared_state_max_age=max_age,
            shared_state_max_calls=max_calls,
            wait_duration_in_open=WAIT,
        )
        self.view = SharedView("dep", config)
        self.max_age, self.max_calls = max_age, max_calls
        if warm:  # a process that has already heard from the store
            self.view.learn(self.now, self.state_now())

    def state_now(self) -> StoreState:
        if self.opened_at is None:
            return StoreState(CircuitState.CLOSED, self.generation, self.now, 0.0)
        return StoreState(CircuitState.OPEN, self.generation, self.now, self.opened_at + WAIT)

    @rule(seconds=st.sampled_from([0.0, 0.1, 0.3, 1.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def start_call(self) -> None:
        decided = self.view.decide(self.now)
        if decided is None:
            self.pending.append(Request("acquire", self.now))
            return
        decision, events = decided
        if not decision.permitted:
            assert [event.kind for event in events] == [EventKind.CALL_NOT_PERMITTED]
            return
        assert type(decision) is CachedPermit
        if self.opened_at is not None:
            self.stale_admits += 1
            assert self.now < self.opened_at + self.max_age, "admitted from too old a view"
            assert not self.learnt_open, "admitted after a reply said OPEN"
        self.running.append(decision)

    @precondition(lambda self: bool(self.running))
    @rule(index=st.integers(0, 30))
    def finish_call(self, index: int) -> None:
        decision = self.running.pop(index % len(self.running))
        self.pending.append(Request("record", self.now, decision))

    @precondition(lambda self: bool(self.pending))
    @rule(index=st.integers(0, 30))
    def store_runs(self, index: int) -> None:
        request = self.pending.pop(index % len(self.pending))
        news = self.state_now()
        permit = None
        if request.op == "acquire" and news.state is CircuitState.CLOSED:
            permit = Decision(True, CircuitState.CLOSED, self.generation)
        self.replies.append(Reply(request, news, permit))

    @precondition(lambda self: bool(self.replies))
    @rule(index=st.integers(0, 30))
    def reply_arrives(self, index: int) -> None:
        reply = self.replies.pop(index % len(self.replies))
        self.view.learn(reply.request.sent_at, reply.news)
        if reply.request.decision is not None:
            self.view.settled(reply.request.decision)
        if reply.permit is not None:
            self.running.append(reply.permit)
        if reply.news.state is CircuitState.OPEN:
            self.learnt_open = True

    @precondition(lambda self: self.opened_at is None)
    @rule()
    def peer_opens(self) -> None:
        self.opened_at = self.now
        self.generation += 1

    @invariant()
    def bounded(self) -> None:
        assert self.stale_admits <= self.max_calls
        cached = sum(type(d) is CachedPermit for d in self.running) + sum(
            type(r.decision) is CachedPermit for r in self.pending
        )
        cached += sum(type(r.request.decision) is CachedPermit for r in self.replies)
        assert self.view.running == cached  # every cached permit is counted until answered


def test_a_process_admits_a_bounded_number_of_calls_after_a_peer_opens() -> None:
    run_state_machine_as_test(
        ProcessAndStore, settings=settings(max_examples=300, stateful_step_count=60)
    )


def open_view(max_age: float = 1.0) -> SharedView:
    view = SharedView("dep", CircuitBreakerConfig(shared_state_max_age=max_age))
    view.learn(100.0, StoreState(CircuitState.OPEN, 7, 100.0, 105.0))
    return view


def test_an_open_view_refuses_until_the_wait_ends_then_asks_the_store() -> None:
    view = open_view(max_age=60.0)
    refused = view.decide(101.5)
    assert refused is not None
    assert refused[0] == Decision(False, CircuitState.OPEN, 7, 0, 3.5)
    assert view.decide(105.0) is None  # the wait is over: a probe slot is the store's to give
    assert view.take_refused() == 1
    assert view.take_refused() == 0


def test_the_wait_is_measured_on_the_store_clock_from_when_the_request_left() -> None:
    view = SharedView("dep", CircuitBreakerConfig(shared_state_max_age=60.0))
    # Sent at local 10.0; the store (its clock 1000 ahead) ran it and said: open until 1004.
    view.learn(10.0, StoreState(CircuitState.OPEN, 1, 1001.0, 1004.0))
    decided = view.decide(11.0)  # the store's time is at most 1002.0 now
    assert decided is not None
    assert decided[0].retry_after == 2.0
    assert view.decide(13.0) is None


def test_an_old_view_asks_the_store_and_a_forced_open_one_refuses_with_the_base_wait() -> None:
    view = open_view(max_age=1.0)
    assert view.decide(101.0) is None
    view.learn(200.0, StoreState(CircuitState.FORCED_OPEN, 8, 200.0, 0.0))
    decided = view.decide(200.5)
    assert decided is not None
    assert decided[0] == Decision(False, CircuitState.FORCED_OPEN, 8, 0, 60.0)


def test_half_open_and_an_unknown_state_always_ask_the_store() -> None:
    view = SharedView("dep", CircuitBreakerConfig())
    assert view.decide(0.0) is None
    view.learn(0.0, StoreState(CircuitState.HALF_OPEN, 2, 0.0, 0.0))
    assert view.decide(0.0) is None


def test_an_older_reply_does_not_replace_a_newer_one_and_forget_drops_the_view() -> None:
    view = open_view(max_age=60.0)
    view.learn(99.0, StoreState(CircuitState.CLOSED, 6, 99.5, 0.0))  # ran before the opening
    decided = view.decide(101.0)
    assert decided is not None
    assert not decided[0].permitted
    view.forget()
    assert view.decide(101.0) is None


def test_a_max_age_of_zero_asks_the_store_before_every_call() -> None:
    view = SharedView("dep", CircuitBreakerConfig(shared_state_max_age=0))
    view.learn(0.0, StoreState(CircuitState.CLOSED, 1, 0.0, 0.0))
    assert view.decide(0.0) is None
