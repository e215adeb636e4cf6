"""Sliding log: exact. In any interval ``[t, t + window)`` at most ``limit`` units are admitted.

State: the admission times still inside the window, one entry per unit of cost,
ascending, so it never holds more than ``limit`` entries. A request's entry counts
from its arrival until ``window`` later; the wait of a rejected request is the
moment the entry that frees enough room leaves the window.
"""

from __future__ import annotations

from bisect import bisect_right

from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    new_result,
)

State = tuple[int, ...]


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    window = spec.window_us
    limit = spec.limit
    log = state or ()
    first_live = bisect_right(log, now - window)
    live = len(log) - first_live
    need = cost or 1
    if live + need <= limit:
        if cost:
            log = log[first_live:] + (now,) * cost
            live += cost
            state = log
        reset = (log[-1] + window - now) / US_PER_SECOND if live else 0.0
        return state, new_result((True, limit, limit - live, 0.0, reset))
    # The (live + need - limit)-th live entry must expire to make room.
    freeing = log[first_live + live + need - limit - 1]
    return state, new_result(
        (
            False,
            limit,
            limit - live,
            (freeing + window - now) / US_PER_SECOND,
            (log[-1] + window - now) / US_PER_SECOND,
        )
    )
