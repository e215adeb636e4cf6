"""Compatibility path: ``sergas_guard.storage.failover`` is now
:mod:`sergas_guard.ratelimit.stores.failover` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.failover import (
    FailoverConfig,
    FailoverStorage,
    FallbackResult,
    StorageFailClosed,
    UncheckedResult,
)

__all__ = [
    "FailoverConfig",
    "FailoverStorage",
    "FallbackResult",
    "StorageFailClosed",
    "UncheckedResult",
]
