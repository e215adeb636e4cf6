"""Pure judgements shared by the ready-made checks: latency and ratio thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sergas_guard.errors import HealthCheckError
from sergas_guard.health.result import HealthStatus, Observation
from sergas_guard.validation import seconds, text

__all__ = ["check_settings", "degrade", "latency_observation", "ratio_in_range"]


def ratio_in_range(value: float) -> bool:
    """True for a finite ratio in (0, 1] (a bool is not a ratio)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= 1
    )


def check_settings(address: tuple[str, object], degraded_latency: float | None = None) -> None:
    """Raise HealthCheckError naming the field for a non-str address or a bad latency.

    ``address`` is the (field, value) of the URL or connection string a check probes:
    anything but a str would fail deep inside the parsing that follows.
    """
    field, value = address
    text(value, field, max_length=8192, error=HealthCheckError)
    if degraded_latency is not None:
        seconds(degraded_latency, "degraded_latency", error=HealthCheckError)


def latency_observation(
    elapsed: float, degraded_latency: float | None, details: Mapping[str, Any]
) -> Observation:
    """A response-time observation in ms: DEGRADED when slower than ``degraded_latency`` s."""
    millis = round(elapsed * 1000, 3)
    if degraded_latency is not None and elapsed > degraded_latency:
        return Observation(
            HealthStatus.DEGRADED,
            f"slow reply: {millis:g} ms (threshold {degraded_latency * 1000:g} ms)",
            millis,
            "ms",
            details,
        )
    return Observation(HealthStatus.HEALTHY, "", millis, "ms", details)


def degrade(observation: Observation, message: str) -> Observation:
    """The same observation, DEGRADED for ``message`` (unless it is already worse)."""
    if observation.status in (HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN):
        return observation
    return replace(observation, status=HealthStatus.DEGRADED, message=message)
