"""The public names of DESIGN.md import from where the contract says they live."""

from __future__ import annotations

import importlib

import pytest

import sergas_guard

CONTRACT = {
    "sergas_guard.ratelimit": [
        "RateLimiter",
        "RateLimitConfig",
        "RateLimitStrategy",
        "RateLimitResult",
        "rate_limited",
    ],
    "sergas_guard.storage": ["MemoryStorage", "RedisStorage", "storage_from_url"],
    "sergas_guard.asgi": ["RateLimitMiddleware"],
    "sergas_guard.wsgi": ["RateLimitMiddleware"],
    "sergas_guard.fastapi": ["RateLimit", "install_exception_handlers"],
    "sergas_guard.circuit_breaker": [
        "CircuitBreaker",
        "CircuitBreakerConfig",
        "CircuitBreakerManager",
        "CircuitState",
        "circuit_breaker",
        "with_retry",
    ],
    "sergas_guard.degradation": [
        "DegradationManager",
        "DegradationLevel",
        "FeatureFlags",
        "CachedFallback",
        "StaticFallback",
        "ServiceFallback",
        "with_fallback",
        "feature_flag",
    ],
    "sergas_guard.health": [
        "HealthCheckRegistry",
        "HealthCheck",
        "HealthStatus",
        "ServiceHealthCheck",
        "DatabaseHealthCheck",
        "CacheHealthCheck",
        "HttpHealthCheck",
        "DiskSpaceHealthCheck",
        "health_router",
    ],
    "sergas_guard.recovery": [
        "BackupManager",
        "BackupType",
        "BackupMetadata",
        "FileSystemBackupStrategy",
        "SQLiteBackupStrategy",
        "PostgresBackupStrategy",
    ],
    "sergas_guard.queueing": ["QueueManager", "ThreadedQueueManager"],
    "sergas_guard.errors": [
        "GuardError",
        "RateLimitExceeded",
        "CircuitOpenError",
        "FeatureDisabledError",
        "StorageError",
        "StorageUnavailable",
        "ConfigurationError",
        "BackupError",
        "IntegrityError",
        "QueueItemRejected",
        "QueueItemTimeout",
    ],
}


@pytest.mark.parametrize(("module", "names"), CONTRACT.items())
def test_contract_names_import(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert getattr(loaded, name) is not None, f"{module}.{name}"


def test_every_top_level_export_resolves() -> None:
    for name in sergas_guard.__all__:
        assert getattr(sergas_guard, name) is not None, name
    assert sergas_guard.RateLimiter is importlib.import_module("sergas_guard.ratelimit").RateLimiter


def test_error_tree_has_one_root() -> None:
    errors = importlib.import_module("sergas_guard.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.GuardError), name
    assert issubclass(errors.StorageUnavailable, errors.StorageError)
    assert issubclass(errors.IntegrityError, errors.BackupError)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = sergas_guard.NoSuchThing
