"""Pure judgements shared by the ready-made checks: latency and ratio thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sergas_guard.health.result import HealthStatus, Observation

__all__ = ["degrade", "latency_observation", "ratio_in_range"]


def ratio_in_range(value: float) -> bool:
    """True for a finite ratio in (0, 1]."""
    return isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1


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
