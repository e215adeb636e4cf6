"""Concurrency limit policies: bounds, growth under low latency, retreat under overload."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import ConfigurationError
from sergas_guard.queueing import (
    AIMDLimit,
    FixedLimit,
    Gradient2Limit,
    LimitPolicy,
    VegasLimit,
    limit_policy,
)

PolicyFactory = Callable[[int, int, int], LimitPolicy]

ADAPTIVE: dict[str, PolicyFactory] = {
    "aimd": lambda lo, hi, start: AIMDLimit(min_limit=lo, max_limit=hi, initial_limit=start),
    "gradient2": lambda lo, hi, start: Gradient2Limit(
        min_limit=lo, max_limit=hi, initial_limit=start
    ),
    "vegas": lambda lo, hi, start: VegasLimit(
        min_limit=lo, max_limit=hi, initial_limit=start, rng=random.Random(7)
    ),
}
EVERY: dict[str, PolicyFactory] = {
    **ADAPTIVE,
    "fixed": lambda lo, hi, start: FixedLimit(start),
}


@st.composite
def bounds(draw: st.DrawFn) -> tuple[int, int, int]:
    low = draw(st.integers(1, 50))
    high = draw(st.integers(low, 400))
    return low, high, draw(st.integers(low, high))


samples = st.lists(
    st.tuples(
        st.floats(1e-5, 30.0, allow_nan=False),  # rtt
        st.integers(0, 500),  # in flight
        st.booleans(),  # dropped
    ),
    max_size=120,
)


@pytest.mark.parametrize("kind", sorted(EVERY))
@settings(max_examples=60, deadline=None)
@given(limits=bounds(), feed=samples)
def test_the_limit_stays_within_its_bounds(
    kind: str, limits: tuple[int, int, int], feed: list[tuple[float, int, bool]]
) -> None:
    low, high, start = limits
    policy = EVERY[kind](low, high, start)
    assert policy.min_limit <= policy.limit <= policy.max_limit
    now = 0.0
    for rtt, in_flight, dropped in feed:
        returned = policy.on_sample(now, rtt, in_flight, dropped)
        now += rtt
        assert returned == policy.limit
        assert policy.min_limit <= policy.limit <= policy.max_limit


def _drive(policy: LimitPolicy, rtt: Callable[[int], float], steps: int, dropped: bool) -> None:
    """Feed ``steps`` samples with the limit saturated (every slot in use)."""
    now = 0.0
    for step in range(steps):
        latency = rtt(step)
        policy.on_sample(now, latency, policy.limit, dropped)
        now += latency


@pytest.mark.parametrize("kind", sorted(ADAPTIVE))
@settings(max_examples=30, deadline=None)
@given(start=st.integers(2, 100), latency=st.floats(1e-4, 1.0))
def test_the_limit_grows_under_steady_low_latency_when_saturated(
    kind: str, start: int, latency: float
) -> None:
    policy = ADAPTIVE[kind](1, 1000, start)
    _drive(policy, lambda _step: latency, 200, dropped=False)
    assert policy.limit > start


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
@settings(max_examples=30, deadline=None)
@given(start=st.integers(30, 300), latency=st.floats(1e-3, 0.1))
def test_the_limit_shrinks_when_latency_rises(kind: str, start: int, latency: float) -> None:
    policy = ADAPTIVE[kind](1, 1000, start)
    _drive(policy, lambda _step: latency, 20, dropped=False)  # learn the usual latency
    before = policy.limit
    _drive(policy, lambda step: latency * (3.0 + step), 20, dropped=False)
    assert policy.limit < before


@pytest.mark.parametrize("kind", ["aimd", "vegas"])
@settings(max_examples=30, deadline=None)
@given(start=st.integers(30, 300), latency=st.floats(1e-3, 0.1))
def test_the_limit_shrinks_when_calls_are_dropped(kind: str, start: int, latency: float) -> None:
    policy = ADAPTIVE[kind](1, 1000, start)
    _drive(policy, lambda _step: latency, 5, dropped=False)
    before = policy.limit
    _drive(policy, lambda _step: latency, 10, dropped=True)
    assert policy.limit < before


def test_aimd_treats_a_call_slower_than_its_timeout_as_a_drop() -> None:
    policy = AIMDLimit(initial_limit=100, min_limit=1, max_limit=200, timeout=1.0)
    assert policy.on_sample(0.0, 1.5, 100, False) == 90
    assert policy.on_sample(0.0, 0.5, 90, False) == 91


def test_an_idle_service_does_not_inflate_its_limit() -> None:
    for kind, make in ADAPTIVE.items():
        policy = make(1, 1000, 100)
        for _ in range(300):
            policy.on_sample(0.0, 0.01, 3, False)  # 3 in flight of 100: app-limited
        assert policy.limit <= 100, kind


def test_gradient2_follows_netflix_formula_for_one_step() -> None:
    policy = Gradient2Limit(initial_limit=50, min_limit=1, max_limit=200)
    policy.on_sample(0.0, 0.010, 50, False)  # long rtt = 0.010, gradient 1: +4 * 0.2
    assert policy.limit == 50  # 50.8
    policy.on_sample(0.0, 0.010, 50, False)
    assert policy.limit == 51  # 51.6
    policy.on_sample(0.0, 0.100, 50, False)  # long 0.04, gradient max(0.5, 0.6) = 0.6
    # 51.6 * 0.8 + (51.6 * 0.6 + 4) * 0.2 = 41.28 + 6.992 = 48.272
    assert policy.limit == 48


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AIMDLimit(min_limit=0), "min_limit"),
        (lambda: AIMDLimit(min_limit=10, max_limit=5, initial_limit=5), "max_limit"),
        (lambda: AIMDLimit(initial_limit=500), "initial_limit"),
        (lambda: AIMDLimit(backoff_ratio=1.0), "backoff_ratio"),
        (lambda: AIMDLimit(timeout=0), "timeout"),
        (lambda: Gradient2Limit(smoothing=0), "smoothing"),
        (lambda: Gradient2Limit(rtt_tolerance=0.5), "rtt_tolerance"),
        (lambda: Gradient2Limit(queue_size=-1), "queue_size"),
        (lambda: VegasLimit(probe_multiplier=0), "probe_multiplier"),
        (lambda: VegasLimit(max_limit=True), "max_limit"),
        (lambda: FixedLimit(0), "limit"),
        (lambda: limit_policy("newest", 10), "limit"),
        (lambda: limit_policy(AIMDLimit(), 10), "limit"),  # max 200 > 10 workers
    ],
)
def test_bad_settings_are_refused_naming_the_field(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()
    assert caught.value.field == field


def test_named_policies_are_sized_for_the_pool() -> None:
    for name in ("fixed", "aimd", "gradient2", "vegas"):
        policy = limit_policy(name, 8)
        assert (policy.limit, policy.max_limit) == (8, 8), name
    assert isinstance(limit_policy("aimd", 8), LimitPolicy)
