"""Pluggable storage for shared state: in memory for one process, Redis for a fleet.

Choose one by URL with :func:`storage_from_url` (``memory://``, ``redis://``,
``rediss://``, ``redis+cluster://host:port,host:port``); drivers load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The rate-limit package imports storage.base while it initialises; loading it first
# keeps `import sergas_guard.storage` (as the first import) out of a circular import.
import sergas_guard.ratelimit  # noqa: F401
from sergas_guard.storage.base import LimitCheck, RateLimitStorage
from sergas_guard.storage.memory import MemoryStorage
from sergas_guard.storage.url import storage_from_url

if TYPE_CHECKING:
    from sergas_guard.storage.failover import FailoverStorage
    from sergas_guard.storage.redis import RedisStorage

__all__ = [
    "FailoverStorage",
    "LimitCheck",
    "MemoryStorage",
    "RateLimitStorage",
    "RedisStorage",
    "storage_from_url",
]


def __getattr__(name: str) -> Any:
    # redis-py and the failover circuit load only when a remote storage is used.
    if name == "RedisStorage":
        from sergas_guard.storage.redis import RedisStorage

        return RedisStorage
    if name == "FailoverStorage":
        from sergas_guard.storage.failover import FailoverStorage

        return FailoverStorage
    raise AttributeError(f"module 'sergas_guard.storage' has no attribute {name!r}")
