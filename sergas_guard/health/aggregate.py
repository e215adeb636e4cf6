"""Pure aggregation: many check results to one status and the summary of the original API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sergas_guard.health.result import CheckResult, HealthStatus

__all__ = ["Results", "as_list", "effective_status", "overall_status", "summarize"]

Results = Mapping[str, CheckResult] | Iterable[CheckResult]

_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.UNKNOWN: 2,
    HealthStatus.UNHEALTHY: 2,
}


def as_list(results: Results) -> list[CheckResult]:
    """The results as a list, whether given as ``{name: result}`` or as an iterable."""
    if isinstance(results, Mapping):
        return list(results.values())
    return list(results)


def effective_status(result: CheckResult) -> HealthStatus:
    """How much one result weighs on the whole.

    A failing (unhealthy or unknown) non-critical check only degrades the service;
    an unknown critical check counts as unhealthy.
    """
    if result.status in (HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN):
        return HealthStatus.UNHEALTHY if result.critical else HealthStatus.DEGRADED
    return result.status


def overall_status(results: Results) -> HealthStatus:
    """The status of the whole: the worst effective status; HEALTHY when nothing was checked."""
    worst = HealthStatus.HEALTHY
    for result in as_list(results):
        status = effective_status(result)
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


def summarize(results: Results) -> dict[str, Any]:
    """The summary of the original documentation plus per-check details.

    Keys: ``status`` (a :class:`HealthStatus`, which compares equal to its string),
    ``total_checks``, ``healthy``, ``degraded``, ``unhealthy``, ``unknown`` (counts of
    each check's own status) and ``checks`` (``{name: result.to_dict()}``).
    """
    items = as_list(results)
    counts = {status: 0 for status in HealthStatus}
    for result in items:
        counts[result.status] += 1
    return {
        "status": overall_status(items),
        "total_checks": len(items),
        "healthy": counts[HealthStatus.HEALTHY],
        "degraded": counts[HealthStatus.DEGRADED],
        "unhealthy": counts[HealthStatus.UNHEALTHY],
        "unknown": counts[HealthStatus.UNKNOWN],
        "checks": {result.name: result.to_dict() for result in items},
    }
