"""RateLimitConfig: what a limiter enforces, validated at construction."""

from __future__ import annotations

from typing import Any, Self

from limits import parse_many
from limits.util import SEPARATORS, SINGLE_EXPR
from pydantic import Field, model_validator

from sergas_guard.config import GuardModel
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.bounds import MAX_COUNT, MAX_WINDOW_SECONDS, check_limit
from sergas_guard.ratelimit.result import US_PER_SECOND, LimitSpec, RateLimitStrategy

__all__ = ["RateLimitConfig", "parse_rate"]


def parse_rate(rate: str) -> list[tuple[int, float]]:
    """``"10/second; 1000 per hour"`` → ``[(10, 1.0), (1000, 3600.0)]`` using limits' parser.

    Raises ConfigurationError (field ``rate``) for a string limits cannot parse, a limit
    below 1 or above 2**52, a window of zero (``"5/0 seconds"``, which limits reads as
    one second) or longer than 50 years; see :mod:`sergas_guard.ratelimit.bounds`.
    """
    if not isinstance(rate, str):
        raise ConfigurationError(f"rate must be a string, not {rate!r:.80}", field="rate")
    try:
        items = parse_many(rate)
    except ValueError as exc:
        raise ConfigurationError(f"invalid rate {rate!r:.200}: {exc}", field="rate") from None
    if not items:
        raise ConfigurationError(f"rate {rate!r:.200} names no limit", field="rate")
    # limits reads a written multiple of 0 as 1; its own grammar tells what was written.
    for part in SEPARATORS.split(rate):
        match = SINGLE_EXPR.match(part)
        if match and match.group(3) is not None and int(match.group(3)) == 0:
            raise ConfigurationError(
                f"rate {rate!r:.200} has a window of zero length ({part.strip()!r})", field="rate"
            )
    parsed = [(int(item.amount), float(item.get_expiry())) for item in items]
    for amount, window in parsed:
        if not 1 <= amount <= MAX_COUNT:
            raise ConfigurationError(
                f"rate {rate!r:.200} has a limit of {amount}; limits are from 1 to 2**52",
                field="rate",
            )
        if window > MAX_WINDOW_SECONDS:
            raise ConfigurationError(
                f"rate {rate!r:.200} has a window of {window:g} seconds; windows are at most "
                f"{MAX_WINDOW_SECONDS} seconds (50 years)",
                field="rate",
            )
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
    max_requests: int | None = Field(default=None, gt=0, le=MAX_COUNT)
    window_seconds: float | None = Field(default=None, gt=0, le=MAX_WINDOW_SECONDS)
    strategy: RateLimitStrategy = RateLimitStrategy.SLIDING_WINDOW
    burst: int | None = Field(default=None, gt=0, le=MAX_COUNT)
    rate: str | None = None
    key_prefix: str = Field(default="sg", min_length=1, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_rate(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rate") is not None:
            first_amount, first_window = parse_rate(data["rate"])[0]
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
        for spec, fields in zip(self.specs(), self._spec_fields(), strict=True):
            check_limit(spec.strategy, spec.limit, spec.window_us, spec.burst, fields=fields)
        return self

    def _spec_fields(self) -> list[tuple[str, str, str]]:
        """The settings each limit of :meth:`specs` came from, for error messages."""
        given = ("max_requests", "window_seconds", "burst")
        if not self.rate:
            return [given]
        from_rate = ("rate", "rate", "burst")
        count = len(parse_rate(self.rate))
        first = parse_rate(self.rate)[0] == (self.max_requests, self.window_seconds)
        return [from_rate if first else given] + [from_rate] * (count - 1)

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
