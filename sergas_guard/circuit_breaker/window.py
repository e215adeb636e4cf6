"""Sliding windows of call outcomes: the last N calls, or the calls of the last N seconds.

Both keep running totals so adding an outcome costs O(1) (the time window pays once per
elapsed second, at most its size). An outcome is coded as ``1 + failed + 2 * slow`` so
that 0 can mark an empty slot; the Lua twin (``lua/breaker.lua``) uses the same code.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["CountWindow", "OutcomeWindow", "TimeWindow", "outcome_code", "rate"]


def outcome_code(failed: bool, slow: bool) -> int:
    """The stored code of one outcome (never 0, which marks an empty slot)."""
    return 1 + int(failed) + 2 * int(slow)


def rate(part: int, whole: int) -> float:
    """``part`` as a percentage of ``whole`` (0 when there is nothing to judge)."""
    return part * 100.0 / whole if whole else 0.0


class OutcomeWindow(Protocol):
    """Totals over the outcomes currently in the window."""

    calls: int
    failures: int
    slow: int

    def add(self, now: float, failed: bool, slow: bool) -> bool:
        """Record one outcome that completed at ``now``; False when the totals stand."""
        ...

    def refresh(self, now: float) -> None:
        """Forget outcomes that fell out of the window by ``now``."""
        ...

    def clear(self) -> None:
        """Forget every outcome."""
        ...


class CountWindow:
    """The last ``size`` outcomes, in a ring."""

    __slots__ = ("_next", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self._ring = [0] * self.size
        self._next = 0
        self.calls = self.failures = self.slow = 0

    def refresh(self, now: float) -> None:
        """A count window does not age."""

    def add(self, now: float, failed: bool, slow: bool) -> bool:
        index = self._next
        self._next = 0 if index + 1 == self.size else index + 1
        ring = self._ring
        old = ring[index]
        code = 1 + failed + 2 * slow  # outcome_code(), inlined: the hot path
        if old == code:
            return False  # it replaces the same outcome: the totals stand
        ring[index] = code
        if old:
            self.calls -= 1
            self.failures -= (old - 1) & 1
            self.slow -= (old - 1) >> 1
        self.calls += 1
        self.failures += failed
        self.slow += slow
        return True


class TimeWindow:
    """Outcomes of the last ``size`` whole seconds, in one bucket per second."""

    __slots__ = (
        "_calls",
        "_failures",
        "_head",
        "_head_index",
        "_slow",
        "calls",
        "failures",
        "size",
        "slow",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self._calls = [0] * self.size
        self._failures = [0] * self.size
        self._slow = [0] * self.size
        self._head = -1  # the latest second the buckets describe; -1 before any
        self._head_index = -1 % self.size
        self.calls = self.failures = self.slow = 0

    def refresh(self, now: float) -> None:
        second = math.floor(now)
        if second <= self._head:
            return
        # Empty the buckets of the seconds that begin between the old head and now
        # (at most ``size`` of them: after that every bucket has been emptied).
        for passed in range(max(self._head + 1, second - self.size + 1), second + 1):
            index = passed % self.size
            self.calls -= self._calls[index]
            self.failures -= self._failures[index]
            self.slow -= self._slow[index]
            self._calls[index] = self._failures[index] = self._slow[index] = 0
        self._head = second
        self._head_index = second % self.size

    def add(self, now: float, failed: bool, slow: bool) -> bool:
        # Within the head's second (most calls) nothing ages: no call to refresh().
        if now >= self._head + 1:
            self.refresh(now)
        # A time that lags the head (clocks of two hosts) counts in the newest second.
        index = self._head_index
        self._calls[index] += 1
        self.calls += 1
        if failed:
            self._failures[index] += 1
            self.failures += 1
        if slow:
            self._slow[index] += 1
            self.slow += 1
        return True
