"""Latency percentiles in bounded memory: the most recent samples in a fixed ring."""

from __future__ import annotations

import math
from array import array

__all__ = ["RecentSamples"]


class RecentSamples:
    """The last ``size`` samples (seconds), for percentiles of recent behaviour.

    A ring rather than a reservoir over all time: an operator asking for the p99 wants
    the last minutes, not an average with last week. Recording is O(1); a percentile
    sorts a copy of at most ``size`` floats.
    """

    __slots__ = ("_count", "_next", "_ring", "size")

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._ring = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, sample: float) -> None:
        """Record one sample, forgetting the oldest once the ring is full."""
        slot = self._next
        self._ring[slot] = sample
        slot += 1
        if slot == self.size:
            slot = 0
        self._next = slot
        if self._count < slot:
            self._count = slot
        elif slot == 0:
            self._count = self.size

    def percentiles(self, *quantiles: float) -> tuple[float, ...]:
        """The nearest-rank percentile for each quantile in [0, 1]; 0.0 for each when empty."""
        if self._count == 0:
            return tuple(0.0 for _ in quantiles)
        ordered = sorted(self._ring[: self._count])
        last = self._count - 1
        return tuple(ordered[min(last, max(0, math.ceil(q * self._count) - 1))] for q in quantiles)
