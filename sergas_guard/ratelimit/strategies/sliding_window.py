"""Sliding window counter: the current window's count plus the previous one's, weighted.

State: ``(window_start_us, current, previous)``, O(1). The estimate
``previous * (time left of the previous window's overlap) + current`` assumes the
previous window's requests were spread evenly. Guarantees: never more than
``limit`` per aligned window (the estimate is at least ``current``), and fewer than
``2 * limit`` in any interval of one window's length (the worst case is a previous
window whose requests all came at its very end). For traffic spread evenly it is
exact; Cloudflare measured 0.003% of requests wrongly decided on real traffic.
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

State = tuple[int, int, int]


def counts(state: State | None, start: int, window: int) -> tuple[int, int]:
    """(current, previous) as seen from the window beginning at ``start``."""
    if state is None:
        return 0, 0
    if state[0] == start:
        return state[1], state[2]
    if state[0] == start - window:
        return 0, state[1]
    return 0, 0


def estimate(state: State | None, t: int, window: int) -> float:
    start = t - t % window
    current, previous = counts(state, start, window)
    return previous * ((window - (t - start)) / window) + current


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    window = spec.window_us
    limit = spec.limit
    start = now - now % window
    # counts() inlined: every decision runs it.
    if state is None:
        current = previous = 0
    elif state[0] == start:
        current = state[1]
        previous = state[2]
    else:
        current = 0
        previous = state[1] if state[0] == start - window else 0
    used = previous * ((window - (now - start)) / window) + current
    need = cost or 1
    if used + need <= limit:
        if not cost:
            return state, new_result(
                (True, limit, int(limit - used), 0.0, _reset(current, previous, start, now, window))
            )
        current += cost
        used += cost  # as the Lua twin adds it: the float rounding must match
        # limit - used stays >= 0 here, so int() is the floor; with this window's count
        # above zero, the state is gone two windows from this one's start.
        return (start, current, previous), new_result(
            (
                True,
                limit,
                int(limit - used),
                0.0,
                (start + 2 * window - now) / US_PER_SECOND,
            )
        )
    if current + need <= limit:
        # The previous window's weight must fall far enough within this window.
        target = start + window - (limit - current - need) * window / previous
    else:
        # Only in the next window, where this window's count becomes the weighted one.
        target = start + 2 * window - (limit - need) * window / current

    def admits_at(t: int) -> bool:
        # estimate() at t, seen from now's window: within it, or in the next one,
        # where this window's count is the weighted one (the answer lies no further).
        elapsed = t - start
        if elapsed < window:
            seen = previous * ((window - elapsed) / window) + current
        else:
            seen = current * ((window - (elapsed - window)) / window)
        return seen + need <= limit

    wait = fewest_us(admits_at, now, target - now)
    return state, new_result(
        (
            False,
            limit,
            max(0, math.floor(limit - used)),
            wait / US_PER_SECOND,
            _reset(current, previous, start, now, window),
        )
    )


def _reset(current: int, previous: int, start: int, now: int, window: int) -> float:
    if current:
        return (start + 2 * window - now) / US_PER_SECOND
    if previous:
        return (start + window - now) / US_PER_SECOND
    return 0.0
