"""What a rate-limit decision returns, and the description of one limit."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, cast

__all__ = ["LimitSpec", "RateLimitResult", "RateLimitStrategy", "most_restrictive"]

US_PER_SECOND = 1_000_000


class RateLimitStrategy(enum.StrEnum):
    """The counting algorithms; see docs/ratelimit.md for when to choose which."""

    TOKEN_BUCKET = "token_bucket"
    SLIDING_WINDOW = "sliding_window"
    FIXED_WINDOW = "fixed_window"
    LEAKY_BUCKET = "leaky_bucket"
    SLIDING_LOG = "sliding_log"


class RateLimitResult(NamedTuple):
    """One decision, with everything response headers need.

    ``remaining`` is what is left after this request; ``retry_after`` is 0 when
    admitted, else the seconds after which the same request would be admitted
    (absent other traffic); ``reset_after`` is the seconds until the limit is
    back to full (no trace of past requests).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


# Strategies build a result on every decision; tuple.__new__ runs in C, where the
# NamedTuple's generated __new__ is Python code (about three times slower).
new_result = cast(
    "Callable[[tuple[bool, int, int, float, float]], RateLimitResult]",
    partial(tuple.__new__, RateLimitResult),
)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: ``limit`` units per ``window_us`` microseconds counted by ``strategy``.

    ``capacity`` is the largest cost one request may have: the burst of the bucket
    strategies, the limit itself for the window strategies.
    """

    strategy: RateLimitStrategy
    limit: int
    window_us: int
    burst: int
    capacity: int = field(init=False, repr=False, compare=False)
    rate: float = field(init=False, repr=False, compare=False)
    interval_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        buckets = (RateLimitStrategy.TOKEN_BUCKET, RateLimitStrategy.LEAKY_BUCKET)
        capacity = self.burst if self.strategy in buckets else self.limit
        # Read on every decision, so computed once (the dataclass is frozen).
        object.__setattr__(self, "capacity", capacity)
        # Units per microsecond; the Lua twin divides the same two numbers.
        object.__setattr__(self, "rate", self.limit / self.window_us)
        # The leaky bucket's emission interval: window / limit rounded up to a whole µs.
        interval = -(-self.window_us // self.limit) if self.limit > 0 else self.window_us
        object.__setattr__(self, "interval_us", max(1, interval))

    @property
    def window_seconds(self) -> float:
        return self.window_us / US_PER_SECOND

    @property
    def slug(self) -> str:
        """A short, stable name for storage keys, e.g. ``sw:100:60000000``."""
        burst = f":{self.burst}" if self.capacity == self.burst != self.limit else ""
        return f"{_SLUG_PREFIX[self.strategy]}:{self.limit}:{self.window_us}{burst}"

    def describe(self) -> str:
        """Human form, e.g. ``100 per 60s (sliding_window)``."""
        return f"{self.limit} per {self.window_seconds:g}s ({self.strategy.value})"


_SLUG_PREFIX = {
    RateLimitStrategy.TOKEN_BUCKET: "tb",
    RateLimitStrategy.SLIDING_WINDOW: "sw",
    RateLimitStrategy.FIXED_WINDOW: "fw",
    RateLimitStrategy.LEAKY_BUCKET: "lb",
    RateLimitStrategy.SLIDING_LOG: "sl",
}


def most_restrictive(results: Sequence[RateLimitResult]) -> int:
    """Index of the result that governs a multi-limit decision.

    A rejection governs an admission; among rejections the longest wait; among
    admissions the fewest remaining, then the latest reset.
    """
    best = 0
    for index in range(1, len(results)):
        a, b = results[index], results[best]
        if a.allowed != b.allowed:
            if not a.allowed:
                best = index
        elif not a.allowed:
            if a.retry_after > b.retry_after:
                best = index
        elif (a.remaining, -a.reset_after) < (b.remaining, -b.reset_after):
            best = index
    return best
