"""Compatibility path: ``sergas_guard.storage.outage`` is now
:mod:`sergas_guard.ratelimit.stores.outage` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.outage import (
    OutageDetector,
)

__all__ = [
    "OutageDetector",
]
