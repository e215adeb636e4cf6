"""sergas_guard: keeps Python web services standing.

Rate limiting, circuit breakers, fallbacks and feature flags, and health checks,
for one process or a fleet sharing Redis. The names below are
re-exported lazily, so importing the package stays cheap and optional extras
are imported only when used.

The ``@circuit_breaker`` decorator is imported from ``sergas_guard.circuit_breaker``:
at the top level that name is the subpackage itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "GuardError": "sergas_guard.errors",
    "ConfigurationError": "sergas_guard.errors",
    "RateLimitExceeded": "sergas_guard.errors",
    "CircuitOpenError": "sergas_guard.errors",
    "FeatureDisabledError": "sergas_guard.errors",
    "StorageError": "sergas_guard.errors",
    "StorageUnavailable": "sergas_guard.errors",
    "BackupError": "sergas_guard.errors",
    "IntegrityError": "sergas_guard.errors",
    # rate limiting
    "RateLimiter": "sergas_guard.ratelimit",
    "RateLimitConfig": "sergas_guard.ratelimit",
    "RateLimitStrategy": "sergas_guard.ratelimit",
    "RateLimitResult": "sergas_guard.ratelimit",
    "rate_limited": "sergas_guard.ratelimit",
    # storage
    "MemoryStorage": "sergas_guard.storage",
    "RedisStorage": "sergas_guard.storage",
    "storage_from_url": "sergas_guard.storage",
    # circuit breakers
    "CircuitBreaker": "sergas_guard.circuit_breaker",
    "CircuitBreakerConfig": "sergas_guard.circuit_breaker",
    "CircuitBreakerManager": "sergas_guard.circuit_breaker",
    "CircuitState": "sergas_guard.circuit_breaker",
    # degradation
    "DegradationManager": "sergas_guard.degradation",
    "DegradationLevel": "sergas_guard.degradation",
    "FeatureFlags": "sergas_guard.degradation",
    "CachedFallback": "sergas_guard.degradation",
    "StaticFallback": "sergas_guard.degradation",
    "ServiceFallback": "sergas_guard.degradation",
    "with_fallback": "sergas_guard.degradation",
    "feature_flag": "sergas_guard.degradation",
    # health
    "HealthCheckRegistry": "sergas_guard.health",
    "HealthStatus": "sergas_guard.health",
    "HealthCheck": "sergas_guard.health",
    "ServiceHealthCheck": "sergas_guard.health",
    "DatabaseHealthCheck": "sergas_guard.health",
    "CacheHealthCheck": "sergas_guard.health",
    "HttpHealthCheck": "sergas_guard.health",
    "DiskSpaceHealthCheck": "sergas_guard.health",
    "health_router": "sergas_guard.health",
    # queues
    "QueueManager": "sergas_guard.queueing",
    "ThreadedQueueManager": "sergas_guard.queueing",
    # retries
    "with_retry": "sergas_guard.circuit_breaker",
    # backups (the optional ``backup`` extra: imported only when used)
    "BackupManager": "sergas_guard.recovery",
    "BackupMetadata": "sergas_guard.recovery",
    "BackupType": "sergas_guard.recovery",
    "FileSystemBackupStrategy": "sergas_guard.recovery",
    "SQLiteBackupStrategy": "sergas_guard.recovery",
    "PostgresBackupStrategy": "sergas_guard.recovery",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sergas_guard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # the lazy names, spelled out for type checkers
    from sergas_guard.circuit_breaker import CircuitBreaker as CircuitBreaker
    from sergas_guard.circuit_breaker import CircuitBreakerConfig as CircuitBreakerConfig
    from sergas_guard.circuit_breaker import CircuitBreakerManager as CircuitBreakerManager
    from sergas_guard.circuit_breaker import CircuitState as CircuitState
    from sergas_guard.circuit_breaker import with_retry as with_retry
    from sergas_guard.degradation import CachedFallback as CachedFallback
    from sergas_guard.degradation import DegradationLevel as DegradationLevel
    from sergas_guard.degradation import DegradationManager as DegradationManager
    from sergas_guard.degradation import FeatureFlags as FeatureFlags
    from sergas_guard.degradation import ServiceFallback as ServiceFallback
    from sergas_guard.degradation import StaticFallback as StaticFallback
    from sergas_guard.degradation.feature_flag import feature_flag as feature_flag
    from sergas_guard.degradation.with_fallback import with_fallback as with_fallback
    from sergas_guard.errors import BackupError as BackupError
    from sergas_guard.errors import CircuitOpenError as CircuitOpenError
    from sergas_guard.errors import ConfigurationError as ConfigurationError
    from sergas_guard.errors import FeatureDisabledError as FeatureDisabledError
    from sergas_guard.errors import GuardError as GuardError
    from sergas_guard.errors import IntegrityError as IntegrityError
    from sergas_guard.errors import RateLimitExceeded as RateLimitExceeded
    from sergas_guard.errors import StorageError as StorageError
    from sergas_guard.errors import StorageUnavailable as StorageUnavailable
    from sergas_guard.health import CacheHealthCheck as CacheHealthCheck
    from sergas_guard.health import DatabaseHealthCheck as DatabaseHealthCheck
    from sergas_guard.health import DiskSpaceHealthCheck as DiskSpaceHealthCheck
    from sergas_guard.health import HealthCheck as HealthCheck
    from sergas_guard.health import HealthCheckRegistry as HealthCheckRegistry
    from sergas_guard.health import HealthStatus as HealthStatus
    from sergas_guard.health import HttpHealthCheck as HttpHealthCheck
    from sergas_guard.health import ServiceHealthCheck as ServiceHealthCheck
    from sergas_guard.health import health_router as health_router
    from sergas_guard.queueing import QueueManager as QueueManager
    from sergas_guard.queueing import ThreadedQueueManager as ThreadedQueueManager
    from sergas_guard.ratelimit import RateLimitConfig as RateLimitConfig
    from sergas_guard.ratelimit import RateLimiter as RateLimiter
    from sergas_guard.ratelimit import RateLimitResult as RateLimitResult
    from sergas_guard.ratelimit import RateLimitStrategy as RateLimitStrategy
    from sergas_guard.ratelimit import rate_limited as rate_limited
    from sergas_guard.recovery import BackupManager as BackupManager
    from sergas_guard.recovery import BackupMetadata as BackupMetadata
    from sergas_guard.recovery import BackupType as BackupType
    from sergas_guard.recovery import FileSystemBackupStrategy as FileSystemBackupStrategy
    from sergas_guard.recovery import PostgresBackupStrategy as PostgresBackupStrategy
    from sergas_guard.recovery import SQLiteBackupStrategy as SQLiteBackupStrategy
    from sergas_guard.storage import MemoryStorage as MemoryStorage
    from sergas_guard.storage import RedisStorage as RedisStorage
    from sergas_guard.storage import storage_from_url as storage_from_url
