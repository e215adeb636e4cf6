"""When a cached check result may be served again: pure rules, no I/O and no asyncio."""

from __future__ import annotations

from dataclasses import dataclass

from sergas_guard.errors import HealthCheckError
from sergas_guard.health.result import CheckResult, HealthStatus
from sergas_guard.validation import seconds

__all__ = ["CachePolicy"]


def _non_negative(name: str, value: float | None) -> None:
    if value is not None:
        seconds(value, name, allow_zero=True, error=HealthCheckError)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long results are reused.

    A HEALTHY result is served for ``ttl`` seconds, any other for ``failure_ttl`` (short,
    so a recovery shows quickly). While a background runner refreshes every
    ``background_interval`` seconds, a result stays good until the next refresh is
    overdue (interval plus the check's own timeout), so requests never run checks
    themselves unless the runner has stalled. Raises HealthCheckError for negative TTLs.
    """

    ttl: float = 5.0
    failure_ttl: float = 1.0
    background_interval: float | None = None

    def __post_init__(self) -> None:
        _non_negative("cache_ttl", self.ttl)
        _non_negative("failure_cache_ttl", self.failure_ttl)
        if self.background_interval is not None:
            seconds(self.background_interval, "interval", error=HealthCheckError)

    def lifetime(self, result: CheckResult, check_timeout: float) -> float:
        """Seconds for which ``result`` may be served after it was produced."""
        own = self.ttl if result.status is HealthStatus.HEALTHY else self.failure_ttl
        if self.background_interval is None:
            return own
        return max(own, self.background_interval + check_timeout)

    def is_fresh(self, result: CheckResult, age: float, check_timeout: float) -> bool:
        """True when a result produced ``age`` seconds ago may be served as it is."""
        return 0 <= age < self.lifetime(result, check_timeout)
