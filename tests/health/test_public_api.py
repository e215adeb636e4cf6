"""The names the project's contract promises, and the package-level re-exports."""

from __future__ import annotations

import sergas_guard
import sergas_guard.health as health

CONTRACT = {
    "HealthCheckRegistry",
    "HealthCheck",
    "HealthStatus",
    "ServiceHealthCheck",
    "DatabaseHealthCheck",
    "CacheHealthCheck",
    "HttpHealthCheck",
    "DiskSpaceHealthCheck",
    "health_router",
    "CheckResult",
}


def test_contract_names_are_exported() -> None:
    assert set(health.__all__) >= CONTRACT
    for name in health.__all__:
        assert getattr(health, name) is not None


def test_package_reexports() -> None:
    assert sergas_guard.HealthCheckRegistry is health.HealthCheckRegistry
    assert sergas_guard.HealthStatus is health.HealthStatus
