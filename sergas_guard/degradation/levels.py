"""Degradation levels and the event emitted when the level changes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

__all__ = ["DegradationLevel", "LevelChange", "parse_level"]


class DegradationLevel(IntEnum):
    """How far the service has stepped down; levels compare by severity.

    ``NORMAL``: everything runs. ``DEGRADED``: non-essential feature flags read as off;
    primaries are still called and fall back on failure. ``CRITICAL``: as DEGRADED, and
    a fresh cached answer is served without calling the primary at all (shed load from
    struggling dependencies). ``MAINTENANCE``: set by an operator only; primaries are
    not called, every call is answered by its fallback or refused.
    """

    NORMAL = 0
    DEGRADED = 1
    CRITICAL = 2
    MAINTENANCE = 3

    @property
    def label(self) -> str:
        """Lower-case name, as used in JSON and logs (``"degraded"``)."""
        return self.name.lower()


def parse_level(value: DegradationLevel | str | int) -> DegradationLevel:
    """Turn ``"degraded"``, ``"DEGRADED"``, ``1`` or a level into a :class:`DegradationLevel`.

    Raises ``ValueError`` (a ``ConfigurationError`` at the edges) for anything else.
    """
    if isinstance(value, DegradationLevel):
        return value
    if isinstance(value, str):
        try:
            return DegradationLevel[value.strip().upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return DegradationLevel(value)
        except ValueError:
            pass
    names = ", ".join(level.label for level in DegradationLevel)
    raise ValueError(f"unknown degradation level {value!r}; expected one of {names}")


@dataclass(frozen=True)
class LevelChange:
    """The effective level moved from ``old`` to ``new``.

    ``source`` says who moved it (an operator's ``set_degradation_level`` or the
    automatic mode); ``reason`` is a short human sentence (which signal crossed what).
    """

    old: DegradationLevel
    new: DegradationLevel
    source: Literal["manual", "auto"]
    reason: str
    at: float
