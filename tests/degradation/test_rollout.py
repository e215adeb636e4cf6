"""Percentage rollout: sticky, monotonic, 0.01 % resolution, and the right share of users."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.degradation.rollout import BUCKETS, bucket_of, in_rollout, rollout_threshold

flag_names = st.text(min_size=1, max_size=40)
user_ids = st.text(max_size=60)
percentages = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@given(flag_names, user_ids)
def test_bucket_is_in_range_and_sticky(flag: str, user: str) -> None:
    bucket = bucket_of(flag, user)
    assert 0 <= bucket < BUCKETS
    assert bucket_of(flag, user) == bucket  # same inputs, same bucket, every time


@given(flag_names, user_ids, percentages, percentages)
def test_rollout_is_monotonic(flag: str, user: str, low: float, high: float) -> None:
    low, high = sorted((low, high))
    # Raising the percentage never turns a user off; lowering never turns one on.
    if in_rollout(flag, user, low):
        assert in_rollout(flag, user, high)
    if not in_rollout(flag, user, high):
        assert not in_rollout(flag, user, low)


@given(flag_names, user_ids)
def test_zero_and_hundred_percent_are_absolute(flag: str, user: str) -> None:
    assert not in_rollout(flag, user, 0.0)
    assert in_rollout(flag, user, 100.0)


def test_bucketing_is_the_same_in_every_process() -> None:
    # Another interpreter, with another hash seed, puts the users in the same buckets
    # (SHA-256, not Python's salted hash()), so every worker agrees.
    code = (
        "from sergas_guard.degradation.rollout import bucket_of;"
        "print([bucket_of('checkout', f'u{i}') for i in range(50)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str([bucket_of("checkout", f"u{i}") for i in range(50)])


def test_resolution_is_a_hundredth_of_a_percent() -> None:
    assert rollout_threshold(0.01) == 1
    assert rollout_threshold(25.0) == 2500
    assert rollout_threshold(33.33) == 3333
    assert rollout_threshold(100.0) == BUCKETS


def test_a_quarter_rollout_enables_a_quarter_of_100000_users() -> None:
    enabled = sum(in_rollout("new_feature", f"user-{i}", 25.0) for i in range(100_000))
    assert 24_000 <= enabled <= 26_000


def test_flags_roll_out_to_different_users() -> None:
    ids = [str(i) for i in range(10_000)]
    first = {u for u in ids if in_rollout("flag-a", u, 10.0)}
    second = {u for u in ids if in_rollout("flag-b", u, 10.0)}
    # Independent 10 % samples overlap in about 1 %, not 10 %.
    assert len(first & second) < 300
