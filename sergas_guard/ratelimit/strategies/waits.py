"""The exact wait of a rejected request, shared by the strategies that estimate it."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["fewest_us"]


def fewest_us(admits_at: Callable[[int], bool], now: int, estimate: float) -> int:
    """The fewest whole microseconds (at least 1) after ``now`` at which ``admits_at`` holds.

    ``estimate`` is the closed form in microseconds; it is moved down, then up, with
    the admitting arithmetic itself (``admits_at`` must hold from some instant on),
    so float rounding can never make a promised wait come up short, and the answer
    names the same instant whenever it is asked (the memory storage answers repeated
    rejections from it). The Lua twin is ``exact_wait_us`` in ``common.lua`` beside
    this module; float error moves the estimate by a microsecond at most.
    """
    wait = max(1, math.ceil(estimate))
    while wait > 1 and admits_at(now + wait - 1):
        wait -= 1
    while not admits_at(now + wait):
        wait += 1
    return wait
