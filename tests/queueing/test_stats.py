"""RecentSamples: nearest-rank percentiles of the most recent samples, in fixed memory."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.queueing.stats import RecentSamples


@settings(max_examples=100, deadline=None)
@given(
    samples=st.lists(st.floats(0, 100, allow_nan=False), max_size=60),
    size=st.integers(1, 16),
    quantile=st.floats(0, 1),
)
def test_percentiles_are_those_of_the_last_samples(
    samples: list[float], size: int, quantile: float
) -> None:
    recent = RecentSamples(size)
    for sample in samples:
        recent.add(sample)
    kept = sorted(samples[-size:]) if samples else []
    assert len(recent) == len(kept)
    (value,) = recent.percentiles(quantile)
    if not kept:
        assert value == 0.0
    else:
        rank = min(len(kept), max(1, math.ceil(quantile * len(kept))))
        assert value == kept[rank - 1]


def test_the_median_and_tail_of_a_known_series() -> None:
    recent = RecentSamples(100)
    for value in range(1, 101):
        recent.add(float(value))
    assert recent.percentiles(0.5, 0.99, 1.0) == (50.0, 99.0, 100.0)
