"""Rate limiting: five strategies, one or several limits per identity, sync and async.

See docs/ratelimit.md. The strategies are pure functions in
:mod:`sergas_guard.ratelimit.strategies`; storages make them atomic.
"""

from __future__ import annotations

from sergas_guard.errors import RateLimitExceeded
from sergas_guard.ratelimit.config import RateLimitConfig, parse_rate
from sergas_guard.ratelimit.decorator import rate_limited
from sergas_guard.ratelimit.limiter import GLOBAL_KEY, RateLimitDecision, RateLimiter
from sergas_guard.ratelimit.result import (
    LimitSpec,
    RateLimitResult,
    RateLimitStrategy,
    most_restrictive,
)

__all__ = [
    "GLOBAL_KEY",
    "LimitSpec",
    "RateLimitConfig",
    "RateLimitDecision",
    "RateLimitExceeded",
    "RateLimitResult",
    "RateLimitStrategy",
    "RateLimiter",
    "most_restrictive",
    "parse_rate",
    "rate_limited",
]
