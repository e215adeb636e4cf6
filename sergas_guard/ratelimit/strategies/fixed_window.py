"""Fixed window: at most ``limit`` units in each window aligned to the Unix epoch.

State: ``(window_start_us, used)``. Cheapest and easiest to explain; allows up to
twice the limit across a window boundary.
"""

from __future__ import annotations

from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    new_result,
)

State = tuple[int, int]


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    window = spec.window_us
    limit = spec.limit
    start = now - now % window
    used = state[1] if state is not None and state[0] == start else 0
    until_next = start + window - now
    need = cost or 1
    if used + need <= limit:
        if cost:
            used += cost
            state = (start, used)
        reset = until_next / US_PER_SECOND if used else 0.0
        return state, new_result((True, limit, limit - used, 0.0, reset))
    seconds = until_next / US_PER_SECOND
    return state, new_result((False, limit, limit - used, seconds, seconds))
