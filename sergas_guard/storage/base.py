"""Compatibility path: ``sergas_guard.storage.base`` is now
:mod:`sergas_guard.ratelimit.stores.base` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.base import (
    LimitCheck,
    RateLimitStorage,
    too_costly,
)

__all__ = [
    "LimitCheck",
    "RateLimitStorage",
    "too_costly",
]
