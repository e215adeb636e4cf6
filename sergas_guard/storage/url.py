"""Compatibility path: ``sergas_guard.storage.url`` is now
:mod:`sergas_guard.ratelimit.stores.url` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.url import (
    storage_from_url,
)

__all__ = [
    "storage_from_url",
]
