"""Pluggable storage for rate limits: in memory for one process, Redis for a fleet.

The stores live beside the strategies they apply, in
:mod:`sergas_guard.ratelimit.stores`; this package keeps the names users import
(``from sergas_guard.storage import MemoryStorage, RedisStorage, storage_from_url``,
``sergas_guard.storage.redis.RedisStorage``, …) working. Choose a store by URL with
:func:`storage_from_url` (``memory://``, ``redis://``, ``rediss://``,
``redis+cluster://host:port,host:port``, ``redis+sentinel://…``); drivers load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sergas_guard.ratelimit import stores
from sergas_guard.ratelimit.stores import (
    LimitCheck,
    MemoryStorage,
    RateLimitStorage,
    storage_from_url,
)

if TYPE_CHECKING:
    from sergas_guard.ratelimit.stores import FailoverStorage, RedisStorage

__all__ = [
    "FailoverStorage",
    "LimitCheck",
    "MemoryStorage",
    "RateLimitStorage",
    "RedisStorage",
    "storage_from_url",
]


def __getattr__(name: str) -> Any:
    # RedisStorage and FailoverStorage load lazily in the stores package (redis-py
    # only when a remote store is used); ask it, and keep its answer.
    if name in ("RedisStorage", "FailoverStorage"):
        value = getattr(stores, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
