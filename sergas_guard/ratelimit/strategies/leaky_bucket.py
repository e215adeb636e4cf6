"""Leaky bucket as a meter, computed as GCRA (the generic cell rate algorithm).

State: ``(theoretical_arrival_us,)``, one number. Requests are admitted at one per
emission interval ``window / limit``, with ``burst`` of them allowed back to back
(default 1: evenly spaced, no bursts at all). A request of cost ``c`` moves the
theoretical arrival time ``c`` intervals ahead.

All arithmetic is in whole microseconds, so bursts are exact and the state is one
integer. The interval is rounded up to a whole microsecond, which errs towards
admitting fewer, never more: 7 per second admits one per 142,858 µs, and no key
is admitted more than once per microsecond.
"""

from __future__ import annotations

from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    new_result,
)

State = tuple[int]


def emission_interval(spec: LimitSpec) -> int:
    """``window / limit`` in whole microseconds, rounded up (at least 1)."""
    return spec.interval_us


def decide(
    state: State | None, now: int, cost: int, spec: LimitSpec
) -> tuple[State | None, RateLimitResult]:
    interval = spec.interval_us
    burst = spec.burst
    tolerance = burst * interval
    # How far the theoretical arrival time runs ahead of now.
    backlog = state[0] - now if state is not None else 0
    if backlog < 0:
        backlog = 0
    need = cost or 1
    if backlog + need * interval <= tolerance:
        if cost:
            backlog += cost * interval
            state = (now + backlog,)
        return state, new_result(
            (
                True,
                burst,
                (tolerance - backlog) // interval,
                0.0,
                backlog / US_PER_SECOND,
            )
        )
    return state, new_result(
        (
            False,
            burst,
            (tolerance - backlog) // interval,
            (backlog + need * interval - tolerance) / US_PER_SECOND,
            backlog / US_PER_SECOND,
        )
    )
