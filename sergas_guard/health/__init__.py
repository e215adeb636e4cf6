"""Health checks: concurrent, time-bounded, cached checks of a service's dependencies.

A :class:`HealthCheckRegistry` holds checks (:class:`DatabaseHealthCheck`,
:class:`CacheHealthCheck`, :class:`HttpHealthCheck`, :class:`ServiceHealthCheck`,
:class:`DiskSpaceHealthCheck` or a subclass of :class:`HealthCheck`) and runs them;
:func:`health_router` serves them as Kubernetes-style routes in IETF health+json.
The WSGI adapter for Flask lives in :mod:`sergas_guard.health.wsgi`.
"""

from __future__ import annotations

from sergas_guard.health.base import HealthCheck
from sergas_guard.health.cache import CacheHealthCheck
from sergas_guard.health.database import DatabaseHealthCheck
from sergas_guard.health.disk import DiskSpaceHealthCheck
from sergas_guard.health.endpoint import HealthRequest
from sergas_guard.health.http import HttpHealthCheck
from sergas_guard.health.registry import DuplicateHealthCheckError, HealthCheckRegistry
from sergas_guard.health.result import CheckResult, HealthStatus, Observation
from sergas_guard.health.routes import health_router
from sergas_guard.health.service import ServiceHealthCheck

__all__ = [
    "CacheHealthCheck",
    "CheckResult",
    "DatabaseHealthCheck",
    "DiskSpaceHealthCheck",
    "DuplicateHealthCheckError",
    "HealthCheck",
    "HealthCheckRegistry",
    "HealthRequest",
    "HealthStatus",
    "HttpHealthCheck",
    "Observation",
    "ServiceHealthCheck",
    "health_router",
]
