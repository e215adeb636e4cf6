"""Netflix's Vegas limit: TCP Vegas's queue estimate applied to concurrency.

The policy remembers the lowest latency it has seen (``rtt_noload``, the service with no
queue) and estimates how many of the calls in flight are queueing rather than being
served::

    queue = ceil(limit * (1 - rtt_noload / rtt))

With ``l = max(1, floor(log10(limit)))``: a queue of at most ``l`` grows the limit by
``6 l`` (beta), one below ``3 l`` (alpha) grows it by ``l``, one above ``6 l`` shrinks it by
``l``, and a dropped call shrinks it by ``l`` whatever the latency. A service using less
than half its limit does not grow it. Every ``probe_multiplier * limit`` samples (times a
random jitter in [0.5, 1)) the policy takes the current RTT as the new no-load RTT, so a
service whose base latency rose is not strangled for ever by an old minimum.

Defaults are Netflix's: initial 20, max 1000, smoothing 1.0, probe_multiplier 30 (min 1).
Pick it for latency-sensitive services with a stable base latency: it reacts to queueing
before the latency doubles, where Gradient2 waits for its tolerance.
"""

from __future__ import annotations

import math
import random

from sergas_guard import validation
from sergas_guard.queueing.policy import AdaptiveLimit

__all__ = ["VegasLimit"]


def _log10_step(limit: float) -> int:
    """The step every Vegas threshold is a multiple of: the limit's order of magnitude, >= 1."""
    return max(1, int(math.log10(max(1.0, limit))))


class VegasLimit(AdaptiveLimit):
    """The Vegas concurrency limit (see the module docstring for the rules)."""

    __slots__ = (
        "_probe_count",
        "_probe_jitter",
        "_random",
        "probe_multiplier",
        "rtt_noload",
        "smoothing",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        smoothing: float = 1.0,
        probe_multiplier: int = 30,
        rng: random.Random | None = None,
    ) -> None:
        """Raises ConfigurationError naming the field for bad bounds, ``smoothing``
        outside (0, 1] or a ``probe_multiplier`` below 1. ``rng`` draws the probe jitter
        (seed one for reproducible runs)."""
        super().__init__(min_limit, max_limit, initial_limit)
        self.smoothing = validation.number(
            smoothing, "smoothing", minimum=0.0, maximum=1.0, exclusive_minimum=True
        )
        self.probe_multiplier = validation.whole(
            probe_multiplier, "probe_multiplier", minimum=1, maximum=1_000_000
        )
        self._random = rng if rng is not None else random.Random()
        self._probe_count = 0
        self._probe_jitter = self._random.uniform(0.5, 1.0)
        self.rtt_noload = 0.0

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> int:
        if not rtt > 0.0:
            return int(self._estimate)  # no latency information (and no division by zero)
        self._probe_count += 1
        if self._probe_count >= self._probe_jitter * self.probe_multiplier * self._estimate:
            self._probe_jitter = self._random.uniform(0.5, 1.0)
            self._probe_count = 0
            self.rtt_noload = rtt
            return int(self._estimate)
        if self.rtt_noload == 0.0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return int(self._estimate)
        estimate = self._estimate
        step = _log10_step(estimate)
        if dropped:
            target = estimate - step
        elif in_flight * 2 < estimate:
            return int(estimate)  # app-limited
        else:
            queue = math.ceil(estimate * (1.0 - self.rtt_noload / rtt))
            if queue <= step:
                target = estimate + 6 * step
            elif queue < 3 * step:
                target = estimate + step
            elif queue > 6 * step:
                target = estimate - step
            else:
                return int(estimate)
        target = self._bounds.clamp(target)
        self._estimate = self._bounds.clamp(
            (1.0 - self.smoothing) * estimate + self.smoothing * target
        )
        return int(self._estimate)
