"""Token bucket: holds up to ``burst`` tokens, refilled continuously at ``limit / window``.

State: ``(tokens, updated_at_us)``. A request takes ``cost`` tokens if that many are
there. Allows bursts of ``burst`` (default: ``limit``) after quiet periods while
holding the long-run rate.
"""

from __future__ import annotations

import math

from sergas_guard.ratelimit.result import US_PER_SECOND, LimitSpec, RateLimitResult
from sergas_guard.ratelimit.strategies._exact import exact_wait_us

State = tuple[float, int]


def _tokens(state: State | None, t: int, rate: float, burst: int) -> float:
    if state is None:
        return float(burst)
    # A clock that went backwards (another server's) refills nothing rather than draining.
    return min(float(burst), state[0] + max(0, t - state[1]) * rate)


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    burst = spec.burst
    rate = spec.limit / spec.window_us
    tokens = _tokens(state, now, rate, burst)
    need = cost or 1
    if tokens >= need:
        if cost:
            tokens -= cost
            state = (tokens, now)
        return state, RateLimitResult(
            True, burst, math.floor(tokens), 0.0, _reset(state, now, tokens, rate, burst)
        )
    wait = exact_wait_us(
        lambda t: _tokens(state, t, rate, burst) >= need, now, (need - tokens) / rate
    )
    return state, RateLimitResult(
        False,
        burst,
        math.floor(tokens),
        wait / US_PER_SECOND,
        _reset(state, now, tokens, rate, burst),
    )


def _reset(state: State | None, now: int, tokens: float, rate: float, burst: int) -> float:
    """Seconds until the bucket is exactly full again (so the key may be forgotten then)."""
    if tokens >= burst:
        return 0.0
    wait = exact_wait_us(
        lambda t: _tokens(state, t, rate, burst) >= burst, now, (burst - tokens) / rate
    )
    return wait / US_PER_SECOND
