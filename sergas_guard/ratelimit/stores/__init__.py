"""The rate-limit stores: in memory for one process, Redis for a fleet, and the
failover wrapper between them.

Each store applies the pure strategies of :mod:`sergas_guard.ratelimit.strategies`
atomically: the memory store under a lock, the Redis store as their Lua twins in one
script. Choose one by URL with :func:`storage_from_url` (``memory://``, ``redis://``,
``rediss://``, ``redis+cluster://host:port,host:port``, ``redis+sentinel://…``);
redis-py and the failover circuit load only when a remote store is used.

Also importable as :mod:`sergas_guard.storage` (the public name users know), a thin
package that re-exports these names; nothing here imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sergas_guard.ratelimit.stores.base import LimitCheck, RateLimitStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.url import storage_from_url

if TYPE_CHECKING:
    from sergas_guard.ratelimit.stores.failover import FailoverStorage
    from sergas_guard.ratelimit.stores.redis import RedisStorage

__all__ = [
    "FailoverStorage",
    "LimitCheck",
    "MemoryStorage",
    "RateLimitStorage",
    "RedisStorage",
    "storage_from_url",
]


def __getattr__(name: str) -> Any:
    # redis-py and the failover circuit load only when a remote store is used.
    if name == "RedisStorage":
        from sergas_guard.ratelimit.stores.redis import RedisStorage

        return RedisStorage
    if name == "FailoverStorage":
        from sergas_guard.ratelimit.stores.failover import FailoverStorage

        return FailoverStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
