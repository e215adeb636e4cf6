"""Compatibility path: ``sergas_guard.storage.redis`` is now
:mod:`sergas_guard.ratelimit.stores.redis` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.redis import (
    RedisStorage,
    check_redis_url,
)

__all__ = [
    "RedisStorage",
    "check_redis_url",
]
