"""Concurrency limit policies: how many calls may run at once, learned from their latency.

A policy is a small pure object (no I/O, no clock, no asyncio): the caller reports each
finished call with :meth:`LimitPolicy.on_sample` and reads :attr:`LimitPolicy.limit`. The
queue manager starts at most that many calls at a time; later the ASGI edge and the
fleet limit drive the same objects. Formulas and defaults follow Netflix's
concurrency-limits (``FixedLimit``, ``AIMDLimit``, ``Gradient2Limit``, ``VegasLimit``),
restated from their documented behaviour, with ``min_limit`` / ``max_limit`` bounds
validated at construction.

Times are seconds as floats on any monotonic clock (only differences matter).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sergas_guard import validation
from sergas_guard.errors import ConfigurationError

__all__ = ["AIMDLimit", "AdaptiveLimit", "FixedLimit", "LimitBounds", "LimitPolicy"]

#: The most concurrent calls any policy may allow: far beyond any sane pool, small
#: enough that arithmetic on it stays exact.
MAX_LIMIT = 1_000_000


@runtime_checkable
class LimitPolicy(Protocol):
    """What a concurrency limit algorithm offers: a limit, and a way to learn from a call."""

    @property
    def limit(self) -> int:
        """How many calls may be in flight now (within the policy's bounds)."""
        ...

    @property
    def min_limit(self) -> int:
        """The lowest limit the policy will ever report."""
        ...

    @property
    def max_limit(self) -> int:
        """The highest limit the policy will ever report."""
        ...

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> int:
        """Learn from one finished call and return the new limit.

        ``start`` is when the call started, ``rtt`` how long it took (seconds),
        ``in_flight`` how many calls were running when it started (itself included), and
        ``dropped`` whether it failed in a way that signals overload (a timeout, a shed).
        """
        ...


class LimitBounds:
    """``min_limit``, ``max_limit`` and ``initial_limit`` checked together at construction."""

    __slots__ = ("initial_limit", "max_limit", "min_limit")

    def __init__(self, min_limit: int, max_limit: int, initial_limit: int) -> None:
        """Raises ConfigurationError naming the field when a bound is not a whole number
        >= 1, ``max_limit < min_limit``, or ``initial_limit`` lies outside them."""
        self.min_limit = validation.whole(min_limit, "min_limit", minimum=1, maximum=MAX_LIMIT)
        self.max_limit = validation.whole(max_limit, "max_limit", minimum=1, maximum=MAX_LIMIT)
        if self.max_limit < self.min_limit:
            raise ConfigurationError(
                f"max_limit ({self.max_limit}) must be at least min_limit ({self.min_limit})",
                field="max_limit",
            )
        self.initial_limit = validation.whole(
            initial_limit, "initial_limit", minimum=self.min_limit, maximum=self.max_limit
        )

    def clamp(self, value: float) -> float:
        """``value`` moved into [min_limit, max_limit]."""
        return min(float(self.max_limit), max(float(self.min_limit), value))


class AdaptiveLimit:
    """What the learning policies share: bounds checked at construction, and an estimate
    kept as a float (small steps add up) but reported as a whole limit."""

    __slots__ = ("_bounds", "_estimate")

    def __init__(self, min_limit: int, max_limit: int, initial_limit: int) -> None:
        """Raises ConfigurationError naming the field for bad bounds (see LimitBounds)."""
        self._bounds = LimitBounds(min_limit, max_limit, initial_limit)
        self._estimate = float(self._bounds.initial_limit)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def min_limit(self) -> int:
        return self._bounds.min_limit

    @property
    def max_limit(self) -> int:
        return self._bounds.max_limit

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(limit={self.limit}, min={self.min_limit}, max={self.max_limit})"
        )


class FixedLimit:
    """A limit that never moves (resilience4j's bulkhead, uvicorn's ``--limit-concurrency``)."""

    __slots__ = ("_limit",)

    def __init__(self, limit: int) -> None:
        """Raises ConfigurationError(field="limit") unless ``limit`` is a whole number >= 1."""
        self._limit = validation.whole(limit, "limit", minimum=1, maximum=MAX_LIMIT)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def min_limit(self) -> int:
        return self._limit

    @property
    def max_limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> int:
        return self._limit

    def __repr__(self) -> str:
        return f"FixedLimit({self._limit})"


class AIMDLimit(AdaptiveLimit):
    """Additive increase, multiplicative decrease, as TCP Reno does.

    Each call that finishes in time while the limit is in use (``in_flight * 2 >= limit``,
    so an idle service does not inflate its limit) adds one; a dropped call, or one
    slower than ``timeout``, multiplies the limit by ``backoff_ratio``. Netflix's defaults:
    initial 20, min 20, max 200, backoff 0.9, timeout 5 s. Pick it when a clear overload
    signal exists (timeouts, 503s) but latency itself is noisy.
    """

    __slots__ = ("backoff_ratio", "timeout")

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        backoff_ratio: float = 0.9,
        timeout: float = 5.0,
    ) -> None:
        """Raises ConfigurationError naming the field for bad bounds, a ``backoff_ratio``
        outside [0.5, 1) or a ``timeout`` that is not a positive number of seconds."""
        super().__init__(min_limit, max_limit, initial_limit)
        self.backoff_ratio = validation.number(backoff_ratio, "backoff_ratio", minimum=0.5)
        if self.backoff_ratio >= 1.0:
            raise ConfigurationError(
                f"backoff_ratio must be below 1, not {backoff_ratio!r}", field="backoff_ratio"
            )
        self.timeout = validation.seconds(timeout, "timeout")

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> int:
        estimate = self._estimate
        if dropped or rtt > self.timeout:
            estimate *= self.backoff_ratio
        elif in_flight * 2 >= estimate:
            estimate += 1.0
        self._estimate = self._bounds.clamp(estimate)
        return int(self._estimate)
