"""The automatic mode's rules, pure: signals to a target level, and hysteresis over time.

Each signal proposes a level; the target is the highest proposal. The automatic level
rises to the target at once, and falls only after every target seen for
``hold_seconds`` stayed below the current level, and then only to the highest of
those targets. A signal that oscillates around the threshold therefore keeps the
level up instead of flapping it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sergas_guard.degradation.levels import DegradationLevel

__all__ = [
    "AutoState",
    "Reading",
    "level_for_breakers",
    "level_for_health",
    "level_for_utilization",
    "step",
]

NORMAL = DegradationLevel.NORMAL
DEGRADED = DegradationLevel.DEGRADED
CRITICAL = DegradationLevel.CRITICAL


@dataclass(frozen=True)
class Reading:
    """What one signal says now: the level it proposes and a short explanation."""

    signal: str
    level: DegradationLevel
    detail: str


def level_for_utilization(fraction: float, threshold: float, critical: float) -> DegradationLevel:
    """DEGRADED from ``threshold`` (e.g. 0.85 of capacity), CRITICAL from ``critical``."""
    if fraction >= critical:
        return CRITICAL
    if fraction >= threshold:
        return DEGRADED
    return NORMAL


CRITICAL_BREAKER_SHARE = 0.5


def level_for_breakers(open_count: int, total: int) -> DegradationLevel:
    """Any open breaker degrades; half or more of them open is critical (so one watched
    breaker that opens is critical: the one dependency it guards is down)."""
    if total <= 0 or open_count <= 0:
        return NORMAL
    return CRITICAL if open_count / total >= CRITICAL_BREAKER_SHARE else DEGRADED


_HEALTH = {
    "healthy": NORMAL,
    "pass": NORMAL,
    "ok": NORMAL,
    "up": NORMAL,
    "unknown": NORMAL,
    "degraded": DEGRADED,
    "warn": DEGRADED,
    "unhealthy": CRITICAL,
    "fail": CRITICAL,
    "down": CRITICAL,
    "critical": CRITICAL,
}


def level_for_health(status: object) -> DegradationLevel:
    """healthy/pass -> NORMAL, degraded/warn -> DEGRADED, unhealthy/fail -> CRITICAL.

    Accepts strings and enums (by value or name); raises ValueError for anything else.
    """
    for candidate in (getattr(status, "value", None), getattr(status, "name", None), status):
        if isinstance(candidate, str) and candidate.lower() in _HEALTH:
            return _HEALTH[candidate.lower()]
    raise ValueError(f"unknown health status {status!r}")


@dataclass(frozen=True)
class AutoState:
    """The automatic level, and since when the targets have stayed below it (if they have)."""

    level: DegradationLevel = NORMAL
    calm_since: float | None = None
    calm_peak: DegradationLevel = NORMAL


def step(state: AutoState, target: DegradationLevel, now: float, hold_seconds: float) -> AutoState:
    """The next automatic state after observing ``target`` at monotonic time ``now``."""
    if target >= state.level:
        return AutoState(target)
    if state.calm_since is None:
        calm_since, peak = now, target
    else:
        calm_since, peak = state.calm_since, max(state.calm_peak, target)
    if now - calm_since < hold_seconds:
        return AutoState(state.level, calm_since, peak)
    # Held long enough: step down to the highest level the calm period still asked for,
    # and if the signals are lower still, start timing the next step down from now.
    if target < peak:
        return AutoState(peak, now, target)
    return AutoState(peak)
