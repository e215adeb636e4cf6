"""Leaky bucket as a meter, computed as GCRA (the generic cell rate algorithm).

State: ``(theoretical_arrival_us,)``, one number. Requests are admitted at one per
emission interval ``window / limit``, with ``burst`` of them allowed back to back
(default 1: evenly spaced, no bursts at all). A request of cost ``c`` advances the
theoretical arrival time by ``c`` intervals.
"""

from __future__ import annotations

import math

from sergas_guard.ratelimit.result import US_PER_SECOND, LimitSpec, RateLimitResult
from sergas_guard.ratelimit.strategies._exact import exact_wait_us

State = tuple[float]


def _backlog(state: State | None, t: int) -> float:
    """How far the theoretical arrival time is ahead of ``t`` (never negative)."""
    return max(0.0, state[0] - t) if state is not None else 0.0


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    interval = spec.window_us / spec.limit
    tolerance = spec.burst * interval
    backlog = _backlog(state, now)
    need = cost or 1
    if backlog + need * interval <= tolerance:
        if cost:
            backlog += cost * interval
            state = (now + backlog,)
        return state, RateLimitResult(
            True,
            spec.burst,
            max(0, math.floor((tolerance - backlog) / interval)),
            0.0,
            math.ceil(backlog) / US_PER_SECOND,
        )
    wait = exact_wait_us(
        lambda t: _backlog(state, t) + need * interval <= tolerance,
        now,
        backlog + need * interval - tolerance,
    )
    return state, RateLimitResult(
        False,
        spec.burst,
        max(0, math.floor((tolerance - backlog) / interval)),
        wait / US_PER_SECOND,
        math.ceil(backlog) / US_PER_SECOND,
    )
