"""Invariants of the five strategies, stated as hypothesis properties over random traffic."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, RateLimitStrategy
from sergas_guard.ratelimit.strategies import decide
from sergas_guard.ratelimit.strategies.leaky_bucket import emission_interval
from tests.ratelimit.strategies_support import arrivals, limit_specs, run

ALL = list(RateLimitStrategy)
EXACT_WAIT = {
    RateLimitStrategy.FIXED_WINDOW,
    RateLimitStrategy.SLIDING_LOG,
    RateLimitStrategy.LEAKY_BUCKET,
}


def spec_and_traffic(
    strategy: RateLimitStrategy,
) -> st.SearchStrategy[tuple[LimitSpec, list[tuple[int, int]]]]:
    return limit_specs(strategy).flatmap(lambda spec: st.tuples(st.just(spec), arrivals(spec)))


def admitted(trace: list[tuple[int, int, Any, Any, RateLimitResult]]) -> list[tuple[int, int]]:
    return [(now, cost) for now, cost, _, _, result in trace if result.allowed]


@pytest.mark.parametrize("strategy", ALL)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_remaining_is_never_negative_nor_above_capacity(
    strategy: RateLimitStrategy, data: st.DataObject
) -> None:
    spec, sequence = data.draw(spec_and_traffic(strategy))
    for *_, result in run(spec, sequence):
        assert 0 <= result.remaining <= spec.capacity
        assert result.limit == spec.capacity
        assert result.retry_after >= 0
        assert result.reset_after >= 0
        assert (result.retry_after == 0) == result.allowed


@pytest.mark.parametrize("strategy", ALL)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_rejection_and_peek_leave_state_unchanged(
    strategy: RateLimitStrategy, data: st.DataObject
) -> None:
    spec, sequence = data.draw(spec_and_traffic(strategy))
    for now, _cost, before, after, result in run(spec, sequence):
        if not result.allowed:
            assert after == before
        peeked_state, peeked = decide(before, now, 0, spec)
        assert peeked_state == before
        # A peek answers for a request of cost 1 and reports what is left now.
        single = decide(before, now, 1, spec)[1]
        assert peeked.allowed == single.allowed


@pytest.mark.parametrize("strategy", ALL)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_retry_after_is_exact(strategy: RateLimitStrategy, data: st.DataObject) -> None:
    """A rejected request made again retry_after later (no other traffic) is admitted."""
    spec, sequence = data.draw(spec_and_traffic(strategy))
    for now, cost, before, _, result in run(spec, sequence):
        if result.allowed:
            continue
        wait_us = round(result.retry_after * 1_000_000)
        assert decide(before, now + wait_us, cost, spec)[1].allowed
        # ...and not meaningfully earlier: integer strategies to the microsecond,
        # fractional ones within the microsecond that rounding up may add.
        slack = 1 if strategy in EXACT_WAIT else 2
        if wait_us > slack:
            assert not decide(before, now + wait_us - slack, cost, spec)[1].allowed


@pytest.mark.parametrize("strategy", ALL)
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_reset_after_returns_to_a_full_limit(
    strategy: RateLimitStrategy, data: st.DataObject
) -> None:
    spec, sequence = data.draw(spec_and_traffic(strategy))
    for now, _, _, after, result in run(spec, sequence):
        reset_us = round(result.reset_after * 1_000_000)
        later = decide(after, now + reset_us, 0, spec)[1]
        fresh = decide(None, now + reset_us, 0, spec)[1]
        # Storages forget a key at that moment, so it must be exactly a fresh key.
        assert later == fresh


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_fixed_window_admits_at_most_limit_per_aligned_window(data: st.DataObject) -> None:
    spec, sequence = data.draw(spec_and_traffic(RateLimitStrategy.FIXED_WINDOW))
    per_window: dict[int, int] = {}
    for now, cost in admitted(run(spec, sequence)):
        per_window[now // spec.window_us] = per_window.get(now // spec.window_us, 0) + cost
    assert all(used <= spec.limit for used in per_window.values())


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_sliding_log_admits_at_most_limit_in_any_window_length_interval(
    data: st.DataObject,
) -> None:
    spec, sequence = data.draw(spec_and_traffic(RateLimitStrategy.SLIDING_LOG))
    granted = admitted(run(spec, sequence))
    # Any interval [a, a + W) holding admissions can be slid to start at one of them.
    for start, _ in granted:
        inside = sum(cost for t, cost in granted if start <= t < start + spec.window_us)
        assert inside <= spec.limit


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_sliding_window_bounds(data: st.DataObject) -> None:
    """Never more than the limit per aligned window, fewer than twice it in any window length."""
    spec, sequence = data.draw(spec_and_traffic(RateLimitStrategy.SLIDING_WINDOW))
    granted = admitted(run(spec, sequence))
    per_window: dict[int, int] = {}
    for now, cost in granted:
        per_window[now // spec.window_us] = per_window.get(now // spec.window_us, 0) + cost
    assert all(used <= spec.limit for used in per_window.values())
    for start, _ in granted:
        inside = sum(cost for t, cost in granted if start <= t < start + spec.window_us)
        assert inside < 2 * spec.limit


@pytest.mark.parametrize(
    "strategy", [RateLimitStrategy.TOKEN_BUCKET, RateLimitStrategy.LEAKY_BUCKET]
)
@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_buckets_admit_at_most_burst_plus_rate_times_interval(
    strategy: RateLimitStrategy, data: st.DataObject
) -> None:
    """In any closed interval [a, b]: admitted <= burst + (b - a) * limit / window."""
    spec, sequence = data.draw(spec_and_traffic(strategy))
    granted = admitted(run(spec, sequence))
    rate = Fraction(spec.limit, spec.window_us)
    if strategy is RateLimitStrategy.LEAKY_BUCKET:
        rate = Fraction(1, emission_interval(spec))  # whole microseconds, rounded up
    for i, (a, _) in enumerate(granted):
        total = 0
        for b, cost in granted[i:]:
            total += cost
            # A few millionths of a unit of float slack on a bound stated in exact fractions.
            assert total <= spec.burst + (b - a) * rate + Fraction(1, 10_000)


@pytest.mark.parametrize("strategy", ALL)
def test_a_fresh_key_admits_a_full_burst_then_rejects(strategy: RateLimitStrategy) -> None:
    burst = 1 if strategy is RateLimitStrategy.LEAKY_BUCKET else 5
    spec = LimitSpec(strategy, 5, 1_000_000, burst)
    now = 1_700_000_000_000_000 + 123  # not on a window boundary
    state = None
    for _ in range(spec.capacity):
        state, result = decide(state, now, 1, spec)
        assert result.allowed
    state, result = decide(state, now, 1, spec)
    assert not result.allowed
    assert result.remaining == 0


def test_leaky_bucket_spaces_admissions_evenly_by_default() -> None:
    spec = LimitSpec(RateLimitStrategy.LEAKY_BUCKET, 10, 1_000_000, 1)  # one per 100 ms
    now = 1_700_000_000_000_000
    state, first = decide(None, now, 1, spec)
    assert first.allowed
    _, too_soon = decide(state, now + 99_999, 1, spec)
    assert not too_soon.allowed
    assert round(too_soon.retry_after * 1_000_000) == 1
    _, on_time = decide(state, now + 100_000, 1, spec)
    assert on_time.allowed


def test_leaky_bucket_bursts_are_exact_for_fractional_intervals() -> None:
    spec = LimitSpec(RateLimitStrategy.LEAKY_BUCKET, 7, 1_000_000, 3)  # 142,857.14 µs
    state = None
    now = 1_700_000_000_000_001
    outcomes = []
    for _ in range(4):
        state, result = decide(state, now, 1, spec)
        outcomes.append(result.allowed)
    assert outcomes == [True, True, True, False]


def test_sliding_window_weights_the_previous_window() -> None:
    spec = LimitSpec(RateLimitStrategy.SLIDING_WINDOW, 10, 1_000_000, 10)
    start = 1_700_000_000_000_000
    state = None
    for _ in range(10):
        state, _ = decide(state, start + 500_000, 1, spec)
    # A quarter into the next window, 75% of the previous 10 still count: 2 more fit.
    quarter = start + 1_250_000
    state, r1 = decide(state, quarter, 1, spec)
    state, r2 = decide(state, quarter, 1, spec)
    _, r3 = decide(state, quarter, 1, spec)
    assert (r1.allowed, r2.allowed, r3.allowed) == (True, True, False)
