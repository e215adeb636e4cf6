"""Sliding log: exact. In any interval ``[t, t + window)`` at most ``limit`` units are admitted.

State: the admission times still inside the window, one entry per unit of cost,
ascending, so it never holds more than ``limit`` entries. A request's entry counts
from its arrival until ``window`` later; the wait of a rejected request is the
moment the entry that frees enough room leaves the window.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import repeat

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
    return state, _rejection(limit, live, freeing, log[-1], window, now)


def decide_in_place(
    log: deque[int] | None, now: int, cost: int, spec: LimitSpec
) -> tuple[deque[int], RateLimitResult]:
    """:func:`decide` on a log the caller owns and keeps under its lock, in O(1) amortized.

    The pure function copies the log (up to ``limit`` entries) on every admission;
    this one drops expired entries from the left and appends on the right. Its
    decisions are :func:`decide`'s exactly; the log it returns is always ``log``
    itself (a new one for ``None``), changed only by dropping expired entries unless
    the request is admitted with a cost. Used by the memory storage.
    """
    window = spec.window_us
    limit = spec.limit
    if log is None:
        log = deque()
    horizon = now - window
    while log and log[0] <= horizon:
        log.popleft()
    live = len(log)
    need = cost or 1
    if live + need <= limit:
        if cost:
            log.extend(repeat(now, cost))
            live += cost
        reset = (log[-1] + window - now) / US_PER_SECOND if live else 0.0
        return log, new_result((True, limit, limit - live, 0.0, reset))
    return log, _rejection(limit, live, log[live + need - limit - 1], log[-1], window, now)


def _rejection(
    limit: int, live: int, freeing: int, newest: int, window: int, now: int
) -> RateLimitResult:
    """Rejected: admitted once ``freeing`` leaves the window, empty once ``newest`` does."""
    return new_result(
        (
            False,
            limit,
            limit - live,
            (freeing + window - now) / US_PER_SECOND,
            (newest + window - now) / US_PER_SECOND,
        )
    )
