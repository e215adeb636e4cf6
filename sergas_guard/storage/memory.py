"""Compatibility path: ``sergas_guard.storage.memory`` is now
:mod:`sergas_guard.ratelimit.stores.memory` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.memory import (
    MemoryStorage,
)

__all__ = [
    "MemoryStorage",
]
