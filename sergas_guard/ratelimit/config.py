"""RateLimitConfig: what a limiter enforces, validated at construction."""

from __future__ import annotations

from typing import Any, Self

from limits import parse_many
from pydantic import Field, model_validator

from sergas_guard.config import GuardModel
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.result import US_PER_SECOND, LimitSpec, RateLimitStrategy

__all__ = ["RateLimitConfig", "parse_rate"]


def parse_rate(rate: str) -> list[tuple[int, float]]:
    """``"10/second; 1000 per hour"`` → ``[(10, 1.0), (1000, 3600.0)]`` using limits' parser."""
    try:
        items = parse_many(rate)
    except ValueError as exc:
        raise ConfigurationError(f"invalid rate {rate!r}: {exc}", field="rate") from None
    if not items:
        raise ConfigurationError(f"rate {rate!r} names no limit", field="rate")
    parsed = [(int(item.amount), float(item.get_expiry())) for item in items]
    for amount, _ in parsed:
        if amount < 1:
            raise ConfigurationError(f"rate {rate!r} has a limit below 1", field="rate")
    return parsed


class RateLimitConfig(GuardModel):
    """One limiter's limits.

    Give ``max_requests`` per ``window_seconds``, or a ``rate`` string in the notation
    of limits/Flask-Limiter/slowapi (``"100/minute"``, ``"10 per second; 1000/hour"``);
    with a rate string, a request must satisfy every limit in it. ``burst`` is the
    bucket size of ``TOKEN_BUCKET`` (default ``max_requests``) and the back-to-back
    allowance of ``LEAKY_BUCKET`` (default 1, evenly spaced); other strategies reject it.
    """

    name: str = Field(default="default", min_length=1, max_length=200)
    max_requests: int | None = Field(default=None, gt=0)
    window_seconds: float | None = Field(default=None, gt=0)
    strategy: RateLimitStrategy = RateLimitStrategy.SLIDING_WINDOW
    burst: int | None = Field(default=None, gt=0)
    rate: str | None = None
    key_prefix: str = Field(default="sg", min_length=1, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_rate(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rate"):
            first_amount, first_window = parse_rate(str(data["rate"]))[0]
            data = dict(data)
            data.setdefault("max_requests", first_amount)
            data.setdefault("window_seconds", first_window)
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_requests is None:
            raise ConfigurationError(
                "max_requests is required (or give a rate string)", field="max_requests"
            )
        if self.window_seconds is None:
            raise ConfigurationError(
                "window_seconds is required (or give a rate string)", field="window_seconds"
            )
        if self.window_seconds * US_PER_SECOND < 1:
            raise ConfigurationError(
                "window_seconds must be at least one microsecond", field="window_seconds"
            )
        if self.burst is not None and self.strategy not in (
            RateLimitStrategy.TOKEN_BUCKET,
            RateLimitStrategy.LEAKY_BUCKET,
        ):
            raise ConfigurationError(
                f"burst applies only to token_bucket and leaky_bucket, not {self.strategy.value}",
                field="burst",
            )
        return self

    def specs(self) -> tuple[LimitSpec, ...]:
        """The limits to enforce, as strategy inputs (window in whole microseconds)."""
        assert self.max_requests is not None
        assert self.window_seconds is not None
        pairs = parse_rate(self.rate) if self.rate else [(self.max_requests, self.window_seconds)]
        if self.rate and (self.max_requests, self.window_seconds) != pairs[0]:
            pairs[0] = (self.max_requests, self.window_seconds)
        return tuple(self._spec(amount, window) for amount, window in pairs)

    def _spec(self, amount: int, window: float) -> LimitSpec:
        if self.strategy is RateLimitStrategy.LEAKY_BUCKET:
            burst = self.burst or 1
        elif self.strategy is RateLimitStrategy.TOKEN_BUCKET:
            burst = self.burst or amount
        else:
            burst = amount
        return LimitSpec(self.strategy, amount, round(window * US_PER_SECOND), burst)
