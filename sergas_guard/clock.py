"""Injectable clocks: algorithms never read the time themselves.

Logic receives the time as an argument; the edges ask a :class:`Clock` for it.
Tests use :class:`ManualClock` and move time by hand.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """Wall time (for shared, epoch-aligned state) and monotonic time (for intervals)."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def time_us(self) -> int:
        """Whole microseconds since the Unix epoch (what the rate-limit strategies compute in)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...


class SystemClock:
    """The real clocks of this process."""

    __slots__ = ()

    # The C functions themselves: a clock read sits on every hot path.
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def time_us(self) -> int:
        return _time.time_ns() // 1000


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to; wall and monotonic time move together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._us = round(start * 1_000_000)
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._us / 1_000_000

    def time_us(self) -> int:
        return self._us

    def monotonic(self) -> float:
        return self._us / 1_000_000

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._us += round(seconds * 1_000_000)

    def advance_us(self, microseconds: int) -> None:
        """Move time forward by a whole number of microseconds."""
        if microseconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._us += microseconds

    def set(self, seconds: float) -> None:
        """Jump to an absolute wall time (never backwards)."""
        us = round(seconds * 1_000_000)
        if us < self._us:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._us = us
