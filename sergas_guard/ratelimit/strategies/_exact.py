"""Making a computed wait exact despite floating point.

Strategies with fractional rates estimate the wait in closed form, then confirm it
with the very predicate that admits requests: the returned number of microseconds
is one at which that predicate holds. Float error is far below a microsecond for
any realistic time, so the confirmation moves the estimate by one step at most;
the Lua twins run the same loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_MAX_CORRECTIONS = 8


def exact_wait_us(admits_at: Callable[[int], bool], now: int, estimate: float) -> int:
    """Smallest whole-microsecond wait >= ceil(estimate), >= 1, at which ``admits_at`` holds."""
    wait = max(1, math.ceil(estimate))
    for _ in range(_MAX_CORRECTIONS):
        if admits_at(now + wait):
            return wait
        wait += 1
    return wait
