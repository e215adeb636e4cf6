"""The breaker's rules, one scenario each, on a manual clock."""

from __future__ import annotations

import pytest

from sergas_guard.circuit_breaker import (
    CircuitBreakerEvent,
    CircuitOpenError,
    CircuitState,
    EventKind,
)
from sergas_guard.clock import ManualClock
from tests.circuit_breaker.support import (
    Boom,
    breaker,
    fail,
    fail_times,
    is_refused,
    state,
    succeed,
)


def test_opens_at_the_failure_rate_once_minimum_calls_are_in() -> None:
    target = breaker()
    fail_times(target, 3)
    assert state(target) is CircuitState.CLOSED  # 3 calls < minimum_calls
    target.call_sync(succeed)  # 4 calls, 3 failed = 75% >= 50%
    assert state(target) is CircuitState.OPEN


def test_stays_closed_below_the_failure_rate() -> None:
    target = breaker()
    for _ in range(10):
        fail_times(target, 1)
        for _ in range(3):
            target.call_sync(succeed)
    assert state(target) is CircuitState.CLOSED
    assert target.get_metrics()["failure_rate"] == pytest.approx(25.0)


def test_count_window_forgets_calls_older_than_its_size() -> None:
    target = breaker(window_size=4, minimum_calls=4, failure_rate_threshold=75)
    fail_times(target, 2)
    for _ in range(4):
        target.call_sync(succeed)
    fail_times(target, 2)  # window: ok ok fail fail = 50% < 75%
    assert state(target) is CircuitState.CLOSED
    fail_times(target, 1)  # window: ok fail fail fail = 75%
    assert state(target) is CircuitState.OPEN


def test_time_window_forgets_calls_older_than_its_seconds() -> None:
    clock = ManualClock()
    target = breaker(clock, window_type="time", window_size=10, minimum_calls=3)
    fail_times(target, 2)
    clock.advance(10.0)  # those two failures leave the window
    target.call_sync(succeed)
    target.call_sync(succeed)
    fail_times(target, 1)
    assert state(target) is CircuitState.CLOSED  # 1 of 3 failed
    assert target.get_metrics()["buffered_calls"] == 3


def test_slow_calls_open_the_breaker() -> None:
    clock = ManualClock()
    target = breaker(clock, slow_call_rate_threshold=50, slow_call_duration=2.0)

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    target.call_sync(succeed)
    target.call_sync(succeed)
    target.call_sync(slow)
    assert state(target) is CircuitState.CLOSED
    target.call_sync(slow)
    assert state(target) is CircuitState.OPEN
    assert target.get_metrics()["slow_calls"] == 2


def test_open_refuses_with_the_time_left_until_half_open() -> None:
    clock = ManualClock()
    target = breaker(clock)
    fail_times(target, 4)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as refused:
        target.call_sync(succeed)
    assert refused.value.name == "dep"
    assert refused.value.state == "open"
    assert refused.value.retry_after == pytest.approx(6.0)
    clock.advance(6.0)
    assert state(target) is CircuitState.HALF_OPEN
    assert target.call_sync(succeed) == "ok"


def test_half_open_closes_after_the_permitted_probes_succeed() -> None:
    clock = ManualClock()
    target = breaker(clock)
    fail_times(target, 4)
    clock.advance(10.0)
    target.call_sync(succeed)
    assert state(target) is CircuitState.HALF_OPEN
    target.call_sync(succeed)
    assert state(target) is CircuitState.CLOSED
    assert target.get_metrics()["buffered_calls"] == 0  # a closed breaker starts afresh


def test_half_open_reopens_with_exponential_backoff_and_cap() -> None:
    clock = ManualClock()
    target = breaker(clock, wait_backoff_multiplier=2.0, max_wait_duration_in_open=25.0)
    fail_times(target, 4)
    waits = []
    for _ in range(3):
        waits.append(target.get_metrics()["retry_after"])
        clock.advance(waits[-1])
        fail_times(target, 2)  # both probes fail
        assert state(target) is CircuitState.OPEN
    assert waits == [10.0, 20.0, 25.0]
    assert target.get_metrics()["consecutive_opens"] == 4


def test_max_wait_in_half_open_reopens_when_probes_never_finish() -> None:
    clock = ManualClock()
    target = breaker(clock, max_wait_in_half_open=5.0)
    fail_times(target, 4)
    clock.advance(10.0)
    with target:
        clock.advance(5.0)
    assert state(target) is CircuitState.OPEN


def test_a_probe_that_never_reports_loses_its_slot_after_probe_timeout() -> None:
    clock = ManualClock()
    target = breaker(clock, permitted_calls_in_half_open=1, probe_timeout=3.0)
    fail_times(target, 4)
    clock.advance(10.0)
    target.__enter__()  # a caller takes the only probe slot and then vanishes
    assert is_refused(target)
    clock.advance(3.0)
    assert target.call_sync(succeed) == "ok"
    assert state(target) is CircuitState.CLOSED


def test_outcomes_of_calls_admitted_before_a_transition_are_not_counted() -> None:
    clock = ManualClock()
    target = breaker(clock)

    def late_failure() -> None:
        fail_times(target, 4)  # opens while this call is running
        clock.advance(10.0)
        target.call_sync(succeed)  # first probe
        raise Boom("late failure of a call admitted while closed")

    with pytest.raises(Boom, match="late failure"):
        target.call_sync(late_failure)
    metrics = target.get_metrics()
    assert metrics["state"] == "half_open"
    assert (metrics["buffered_calls"], metrics["failed_calls"]) == (1, 0)


def test_ignored_exceptions_count_as_nothing_and_unrecorded_ones_as_success() -> None:
    target = breaker(record_exceptions=(Boom,), ignore_exceptions=(KeyError,))

    def key_error() -> None:
        raise KeyError("x")

    def type_error() -> None:
        raise TypeError("x")

    for bad in (key_error, type_error):
        with pytest.raises((KeyError, TypeError)):
            target.call_sync(bad)
    metrics = target.get_metrics()
    assert (metrics["buffered_calls"], metrics["failed_calls"]) == (1, 0)


def test_exceptions_may_be_named_by_dotted_path() -> None:
    target = breaker(record_exceptions=["tests.circuit_breaker.support.Boom"])
    fail_times(target, 1)
    assert target.get_metrics()["failed_calls"] == 1


def test_record_result_counts_a_returned_value_as_failure() -> None:
    target = breaker(record_result=lambda status: status == 503)
    for _ in range(4):
        assert target.call_sync(lambda: 503) == 503
    assert state(target) is CircuitState.OPEN


def test_forced_open_refuses_until_moved_by_hand() -> None:
    clock = ManualClock()
    target = breaker(clock)
    target.transition_to_forced_open()
    clock.advance(1000.0)
    with pytest.raises(CircuitOpenError) as refused:
        target.call_sync(succeed)
    assert refused.value.state == "forced_open"
    target.transition_to_closed()
    assert target.call_sync(succeed) == "ok"


def test_disabled_lets_everything_through_and_records_nothing() -> None:
    target = breaker()
    target.transition_to_disabled()
    fail_times(target, 20)
    metrics = target.get_metrics()
    assert (metrics["state"], metrics["buffered_calls"]) == ("disabled", 0)


def test_metrics_only_records_and_reports_but_never_opens() -> None:
    target = breaker()
    events: list[CircuitBreakerEvent] = []
    target.add_listener(events.append)
    target.transition_to_metrics_only()
    fail_times(target, 8)
    metrics = target.get_metrics()
    assert (metrics["state"], metrics["failed_calls"]) == ("metrics_only", 4)
    # Every call from the 4th on finds the window over the threshold and says so, even
    # when the outcome it adds replaces the same outcome and the totals stand.
    exceeded = [event for event in events if event.kind is EventKind.FAILURE_RATE_EXCEEDED]
    assert len(exceeded) == 5
    assert target.call_sync(succeed) == "ok"


def test_manual_half_open_and_open_follow_the_automatic_rules() -> None:
    clock = ManualClock()
    target = breaker(clock)
    target.transition_to_open()
    assert is_refused(target)
    clock.advance(10.0)
    assert state(target) is CircuitState.HALF_OPEN
    target.transition_to_closed()
    target.transition_to_half_open()
    target.call_sync(succeed)
    target.call_sync(succeed)
    assert state(target) is CircuitState.CLOSED


def test_reset_clears_window_counters_and_backoff() -> None:
    clock = ManualClock()
    target = breaker(clock, wait_backoff_multiplier=3.0)
    fail_times(target, 4)
    is_refused(target)
    target.reset()
    metrics = target.get_metrics()
    assert metrics["state"] == "closed"
    assert (metrics["buffered_calls"], metrics["rejected_calls"]) == (0, 0)
    assert metrics["consecutive_opens"] == 0
    fail_times(target, 4)
    assert target.get_metrics()["retry_after"] == 10.0  # the backoff starts over


def test_listeners_see_transitions_refusals_and_rate_events() -> None:
    clock = ManualClock()
    target = breaker(clock)
    events: list[CircuitBreakerEvent] = []
    target.add_listener(events.append)

    def broken_listener(event: CircuitBreakerEvent) -> None:
        raise RuntimeError("a broken listener must not break the breaker")

    target.add_listener(broken_listener)
    fail_times(target, 4)
    is_refused(target)
    kinds = [event.kind for event in events]
    assert kinds == [
        EventKind.FAILURE_RATE_EXCEEDED,
        EventKind.STATE_TRANSITION,
        EventKind.CALL_NOT_PERMITTED,
    ]
    assert events[0].rate == 100.0
    assert (events[1].from_state, events[1].to_state) == (CircuitState.CLOSED, CircuitState.OPEN)
    target.remove_listener(events.append)
    target.reset()
    assert len(events) == 3


def test_rejected_and_not_permitted_are_counted_apart() -> None:
    clock = ManualClock()
    target = breaker(clock, permitted_calls_in_half_open=1)
    fail_times(target, 4)
    assert is_refused(target)
    clock.advance(10.0)
    with target:
        assert is_refused(target)
        assert is_refused(target)
    metrics = target.get_metrics()
    assert (metrics["rejected_calls"], metrics["not_permitted_calls"]) == (1, 2)


def test_a_raising_record_result_gives_the_probe_slot_back() -> None:
    clock = ManualClock()

    def broken(value: object) -> bool:
        raise ValueError("predicate bug")

    target = breaker(clock, permitted_calls_in_half_open=1, record_result=broken)
    target.transition_to_half_open()
    with pytest.raises(ValueError, match="predicate bug"):
        target.call_sync(succeed)
    assert target.get_metrics()["probes_in_flight"] == 0


def test_exit_without_enter_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without being entered"):
        breaker().__exit__(None, None, None)


def test_failing_call_propagates_its_own_exception() -> None:
    with pytest.raises(Boom, match="dependency failed"):
        breaker().call_sync(fail)
