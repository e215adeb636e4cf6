"""What a health check reports: a status and one observation, timed and dated."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["CheckResult", "HealthStatus", "Observation"]


class HealthStatus(StrEnum):
    """The state of one check or of a whole service.

    ``UNKNOWN`` means nothing ran (no result yet, or a check said it cannot tell);
    the aggregation treats it as a failure, because an orchestrator should not send
    traffic to a service whose critical dependency is in an unknown state.
    """

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"

    @property
    def health_json(self) -> str:
        """The draft-inadarei-api-health-check word: ``pass``, ``warn`` or ``fail``."""
        return _HEALTH_JSON[self]


_HEALTH_JSON = {
    HealthStatus.HEALTHY: "pass",
    HealthStatus.DEGRADED: "warn",
    HealthStatus.UNHEALTHY: "fail",
    HealthStatus.UNKNOWN: "fail",
}


@dataclass(frozen=True, slots=True)
class Observation:
    """What a probe saw, before the check base class times and dates it.

    ``observed_value``/``observed_unit`` are the one measurement the check is about
    (e.g. ``3.2`` ``"ms"`` for a round trip); ``details`` carries the rest
    (connection counts, memory use) and must hold no secrets.
    """

    status: HealthStatus
    message: str = ""
    observed_value: float | int | None = None
    observed_unit: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of running one health check once.

    ``duration`` is in seconds, ``time`` is the wall-clock time (epoch seconds) at
    which the check finished. ``critical`` and ``tags`` are copied from the check so
    results can be aggregated and filtered without the registry.
    """

    name: str
    status: HealthStatus
    message: str = ""
    observed_value: float | int | None = None
    observed_unit: str | None = None
    duration: float = 0.0
    time: float = 0.0
    critical: bool = True
    tags: frozenset[str] = frozenset()
    component_type: str = "component"
    measurement: str = "status"
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_healthy(self) -> bool:
        """True when the status is HEALTHY."""
        return self.status is HealthStatus.HEALTHY

    @property
    def time_iso(self) -> str:
        """``time`` as an RFC 3339 UTC timestamp, as health+json wants it."""
        moment = dt.datetime.fromtimestamp(self.time, tz=dt.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (status as its string value)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "observed_value": self.observed_value,
            "observed_unit": self.observed_unit,
            "duration_ms": round(self.duration * 1000, 3),
            "time": self.time_iso,
            "critical": self.critical,
            "tags": sorted(self.tags),
            "component_type": self.component_type,
            "details": dict(self.details),
        }
