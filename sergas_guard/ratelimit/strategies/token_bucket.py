"""Token bucket: holds up to ``burst`` tokens, refilled continuously at ``limit / window``.

State: ``(tokens, updated_at_us)``. A request takes ``cost`` tokens if that many are
there. Allows bursts of ``burst`` (default: ``limit``) after quiet periods while
holding the long-run rate.
"""

from __future__ import annotations

import math

from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    new_result,
)
from sergas_guard.ratelimit.strategies.waits import fewest_us

State = tuple[float, int]


def _tokens_at(tokens: float, updated_at: int, t: int, rate: float, burst: int) -> float:
    # A clock that went backwards (another server's) refills nothing rather than draining.
    elapsed = t - updated_at
    level = tokens + elapsed * rate if elapsed > 0 else tokens
    return level if level < burst else float(burst)


def _wait_for(
    tokens: float, updated_at: int, now: int, level: float, rate: float, burst: int
) -> int:
    """The fewest whole microseconds (at least 1) until a bucket at ``tokens`` holds ``level``."""
    current = _tokens_at(tokens, updated_at, now, rate, burst)
    return fewest_us(
        lambda t: _tokens_at(tokens, updated_at, t, rate, burst) >= level,
        now,
        (level - current) / rate,
    )


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    burst = spec.burst
    rate = spec.rate
    if state is None:
        if not cost:
            return None, new_result((True, burst, burst, 0.0, 0.0))
        # A fresh bucket is full as of now; it then takes the known-key path below
        # (with many clients in rotation, most decisions find their key refilled).
        saved = tokens = float(burst)
        updated_at = now
    else:
        saved, updated_at = state
        # _tokens_at inlined: this line runs on every decision of a known key.
        elapsed = now - updated_at
        tokens = saved + elapsed * rate if elapsed > 0 else saved
        if tokens > burst:
            tokens = float(burst)
    need = cost or 1
    if tokens >= need:
        if not cost:  # a peek: the stored state stays, and so does its refill arithmetic
            reset = _wait_for(saved, updated_at, now, burst, rate, burst) if tokens < burst else 0
            return state, new_result((True, burst, int(tokens), 0.0, reset / US_PER_SECOND))
        tokens -= cost
        # _wait_for(tokens, now, now, burst, ...) inlined, as every admission runs it:
        # from the new state, the level at now + w is tokens + w * rate.
        reset = math.ceil((burst - tokens) / rate)
        if reset < 1:
            reset = 1
        while reset > 1 and tokens + (reset - 1) * rate >= burst:
            reset -= 1
        while tokens + reset * rate < burst:
            reset += 1
        return (tokens, now), new_result((True, burst, int(tokens), 0.0, reset / US_PER_SECOND))
    # Rejections are rare on the hot path (the memory storage memoizes them).
    wait = _wait_for(saved, updated_at, now, need, rate, burst)
    reset = _wait_for(saved, updated_at, now, burst, rate, burst)
    return state, new_result(
        (False, burst, math.floor(tokens), wait / US_PER_SECOND, reset / US_PER_SECOND)
    )
