"""Netflix's Gradient2: the limit follows the ratio of long-term to short-term latency.

Each sample compares the latest round-trip time (the short RTT) with an exponential
average over the last ``long_window`` samples (the long RTT, the service's usual latency):

    gradient  = clamp(rtt_tolerance * long_rtt / short_rtt, 0.5, 1.0)
    new       = limit * gradient + queue_size
    limit     = clamp(limit * (1 - smoothing) + new * smoothing, min_limit, max_limit)

While latency holds, the gradient is 1 and the limit grows by ``queue_size`` (scaled by
``smoothing``) per sample; once short RTTs exceed ``rtt_tolerance`` times the usual, the
gradient drops below 1 and the limit shrinks, at most by half per sample so one outlier
cannot collapse it. A service that is not using half its limit does not grow it, and
when latency falls back after a long overload the long average is pulled down 5% per
sample so the limit is not held low by old history. Drops are not an input: Gradient2
reads overload from latency alone (a timed-out call reports its long RTT).

Defaults are Netflix's: initial 20, min 20, max 200, smoothing 0.2, rtt_tolerance 1.5,
long_window 600, queue_size 4. Pick it for services whose latency rises with load (most
of them): it needs no timeout to be tuned.
"""

from __future__ import annotations

from sergas_guard import validation
from sergas_guard.queueing.policy import AdaptiveLimit

__all__ = ["ExponentialAverage", "Gradient2Limit"]


class ExponentialAverage:
    """An exponential moving average over ``window`` samples, a plain mean while warming up.

    The first ``warmup`` samples are averaged plainly (an EMA seeded with one sample would
    follow that sample for hundreds more); after that each sample weighs 2 / (window + 1).
    """

    __slots__ = ("_count", "_factor", "_sum", "_warmup", "value")

    def __init__(self, window: int, warmup: int = 10) -> None:
        self._factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self._sum = 0.0
        self.value = 0.0

    def add(self, sample: float) -> float:
        """Fold ``sample`` in and return the new average."""
        if self._count < self._warmup:
            self._count += 1
            self._sum += sample
            self.value = self._sum / self._count
        else:
            self.value = self.value * (1.0 - self._factor) + sample * self._factor
        return self.value


class Gradient2Limit(AdaptiveLimit):
    """The Gradient2 concurrency limit (see the module docstring for the formula)."""

    __slots__ = (
        "_long_rtt",
        "last_rtt",
        "queue_size",
        "rtt_tolerance",
        "smoothing",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        smoothing: float = 0.2,
        rtt_tolerance: float = 1.5,
        long_window: int = 600,
        queue_size: int = 4,
    ) -> None:
        """Raises ConfigurationError naming the field for bad bounds, ``smoothing``
        outside (0, 1], ``rtt_tolerance`` below 1, a ``long_window`` below 1 or a
        negative ``queue_size``."""
        super().__init__(min_limit, max_limit, initial_limit)
        self.smoothing = validation.number(
            smoothing, "smoothing", minimum=0.0, maximum=1.0, exclusive_minimum=True
        )
        self.rtt_tolerance = validation.number(rtt_tolerance, "rtt_tolerance", minimum=1.0)
        window = validation.whole(long_window, "long_window", minimum=1, maximum=1_000_000)
        self.queue_size = validation.whole(queue_size, "queue_size", minimum=0, maximum=1_000_000)
        self._long_rtt = ExponentialAverage(window)
        self.last_rtt = 0.0

    @property
    def long_rtt(self) -> float:
        """The service's usual latency as the policy sees it (seconds)."""
        return self._long_rtt.value

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> int:
        if not rtt > 0.0:
            # A zero (or NaN) RTT carries no latency information and would divide by zero.
            return int(self._estimate)
        self.last_rtt = rtt
        long_rtt = self._long_rtt.add(rtt)
        if long_rtt / rtt > 2.0:
            # Latency came back down after a long overload: forget the old level faster.
            self._long_rtt.value = long_rtt = long_rtt * 0.95
        if in_flight < self._estimate / 2:
            return int(self._estimate)  # app-limited: the latency says nothing about the limit
        gradient = max(0.5, min(1.0, self.rtt_tolerance * long_rtt / rtt))
        target = self._estimate * gradient + self.queue_size
        smoothed = self._estimate * (1.0 - self.smoothing) + target * self.smoothing
        self._estimate = self._bounds.clamp(smoothed)
        return int(self._estimate)
