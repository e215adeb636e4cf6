"""Hypothesis strategies shared by the rate-limit tests: limits and arrival sequences."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, RateLimitStrategy
from sergas_guard.ratelimit.strategies import decide

EPOCH_US = 1_700_000_000_000_000  # realistic wall times, where float spacing is 0.25 µs


@st.composite
def limit_specs(draw: st.DrawFn, strategy: RateLimitStrategy | None = None) -> LimitSpec:
    chosen = strategy or draw(st.sampled_from(list(RateLimitStrategy)))
    limit = draw(st.integers(1, 25))
    window = draw(st.integers(1, 5_000_000))
    if chosen is RateLimitStrategy.TOKEN_BUCKET:
        burst = draw(st.integers(1, 2 * limit))
    elif chosen is RateLimitStrategy.LEAKY_BUCKET:
        burst = draw(st.integers(1, limit))
    else:
        burst = limit
    return LimitSpec(chosen, limit, window, burst)


@st.composite
def arrivals(draw: st.DrawFn, spec: LimitSpec, max_size: int = 60) -> list[tuple[int, int]]:
    """(absolute time in µs, cost) pairs, times non-decreasing, costs within capacity."""
    start = EPOCH_US + draw(st.integers(0, 10 * spec.window_us))
    gaps = draw(
        st.lists(
            st.one_of(
                st.just(0),
                st.integers(0, max(1, spec.window_us // max(1, spec.limit))),
                st.integers(0, 2 * spec.window_us),
            ),
            min_size=1,
            max_size=max_size,
        )
    )
    costs = draw(st.lists(st.integers(1, spec.capacity), min_size=len(gaps), max_size=len(gaps)))
    times = []
    now = start
    for gap in gaps:
        now += gap
        times.append(now)
    return list(zip(times, costs, strict=True))


def run(
    spec: LimitSpec, sequence: list[tuple[int, int]]
) -> list[tuple[int, int, Any, Any, RateLimitResult]]:
    """Feed a sequence through the pure function: (time, cost, state before, after, result)."""
    state: Any = None
    trace = []
    for now, cost in sequence:
        new_state, result = decide(state, now, cost, spec)
        trace.append((now, cost, state, new_state, result))
        state = new_state
    return trace
