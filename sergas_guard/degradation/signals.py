"""Signals for the automatic mode: read limiters, queues, breakers and health, duck-typed.

Each source is wrapped once (:func:`signal_for`) into a small reader returning a
:class:`~.auto.Reading`. Sources are recognised by what they offer:

* ``get_metrics()`` with ``utilization_percent`` (rate limiters, queues): utilisation;
* a callable returning a number: utilisation as a fraction 0..1;
* ``.state`` (a circuit breaker) or a breaker manager: open breakers;
* ``check_all()`` + ``get_summary()`` (a health registry), ``.status``, or a callable
  returning a status string: health.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sergas_guard.degradation.auto import (
    Reading,
    level_for_breakers,
    level_for_health,
    level_for_utilization,
)
from sergas_guard.errors import ConfigurationError

__all__ = ["Signal", "SignalKind", "Thresholds", "signal_for"]

SignalKind = Literal["utilization", "breakers", "health"]

_OPEN_STATES = {"OPEN", "FORCED_OPEN"}


@dataclass(frozen=True)
class Thresholds:
    """Where utilisation and breaker signals propose DEGRADED and CRITICAL."""

    degrade: float = 0.85
    critical: float = 0.95


def _is_open(state: object) -> bool:
    refuses = getattr(state, "refuses_calls", None)
    if isinstance(refuses, bool):
        return refuses
    label = getattr(state, "name", None) or getattr(state, "value", None) or state
    return str(label).upper() in _OPEN_STATES


def _breaker_states(source: Any) -> dict[str, object]:
    """Name -> state of a breaker or of every breaker a manager holds."""
    if hasattr(source, "state") and not hasattr(source, "get_or_create"):
        return {str(getattr(source, "name", "breaker")): source.state}
    states = getattr(source, "states", None)
    if callable(states):
        return dict(states())
    if isinstance(source, Iterable):
        return {str(getattr(b, "name", i)): b.state for i, b in enumerate(source)}
    raise ConfigurationError(f"cannot list the breakers of {source!r}", field="source")


class Signal:
    """One source of load or health, read synchronously or asynchronously."""

    def __init__(self, name: str, kind: SignalKind, source: Any, thresholds: Thresholds) -> None:
        self.name = name
        self.kind = kind
        self.source = source
        self.thresholds = thresholds
        self._last_health: object = None  # a registry's last summarised status

    def __repr__(self) -> str:
        return f"Signal(name={self.name!r}, kind={self.kind!r})"

    def read(self) -> Reading | None:
        """The signal's proposal now, from what can be read without awaiting."""
        if self.kind == "utilization":
            return self._utilization(self._raw_utilization())
        if self.kind == "breakers":
            states = _breaker_states(self.source)
            opened = sorted(name for name, state in states.items() if _is_open(state))
            level = level_for_breakers(len(opened), len(states))
            names = ", ".join(opened) or "none"
            return Reading(self.name, level, f"{len(opened)}/{len(states)} breakers open ({names})")
        return self._health(self._sync_health())

    async def read_async(self) -> Reading | None:
        """The signal's proposal now; runs a health registry's checks when it has one."""
        if self.kind == "health" and callable(getattr(self.source, "check_all", None)):
            results = await self.source.check_all()
            summary = self.source.get_summary(results)
            self._last_health = summary["status"] if isinstance(summary, dict) else summary
            return self._health(self._last_health)
        if self.kind == "utilization":
            value = self._call_source()
            if inspect.isawaitable(value):
                value = await value
            return self._utilization(self._fraction(value))
        if self.kind == "health" and self._source_is_function():
            status = self.source()
            if inspect.isawaitable(status):
                status = await status
            return self._health(status)
        return self.read()

    def _source_is_function(self) -> bool:
        return callable(self.source) and getattr(self.source, "status", None) is None

    def _call_source(self) -> Any:
        getter = getattr(self.source, "get_metrics", None)
        return getter() if callable(getter) else self.source()

    def _fraction(self, value: Any) -> float:
        if isinstance(value, dict):
            return float(value["utilization_percent"]) / 100.0
        return float(value)

    def _raw_utilization(self) -> float:
        value = self._call_source()
        if inspect.isawaitable(value):
            _discard(value)
            raise ConfigurationError(f"signal {self.name!r} is async: use evaluate_async()")
        return self._fraction(value)

    def _utilization(self, fraction: float) -> Reading:
        level = level_for_utilization(fraction, self.thresholds.degrade, self.thresholds.critical)
        return Reading(
            self.name,
            level,
            f"utilisation {fraction:.0%} (degrade at {self.thresholds.degrade:.0%})",
        )

    def _sync_health(self) -> object:
        if callable(getattr(self.source, "check_all", None)):
            return self._last_health  # only an async evaluation runs the checks
        status = getattr(self.source, "status", None)
        if status is not None and not callable(status):
            return status
        value = self.source()
        if inspect.isawaitable(value):
            _discard(value)
            raise ConfigurationError(f"signal {self.name!r} is async: use evaluate_async()")
        return value

    def _health(self, status: object) -> Reading | None:
        if status is None:
            return None
        return Reading(
            self.name, level_for_health(status), f"health {getattr(status, 'value', status)}"
        )


def _discard(awaitable: Any) -> None:
    # Close an un-awaited coroutine so it does not warn "never awaited".
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _guess_kind(source: Any) -> SignalKind:
    if callable(getattr(source, "get_metrics", None)) and not hasattr(source, "state"):
        return "utilization"
    if hasattr(source, "get_or_create") or hasattr(source, "state"):
        return "breakers"
    if callable(getattr(source, "check_all", None)) or hasattr(source, "status"):
        return "health"
    if callable(source):
        return "utilization"
    raise ConfigurationError(
        f"cannot tell what kind of signal {source!r} is; pass kind=", field="source"
    )


def signal_for(
    source: Any,
    thresholds: Thresholds,
    *,
    name: str | None = None,
    kind: SignalKind | None = None,
) -> Signal:
    """Wrap ``source`` as a signal, guessing its kind unless ``kind`` is given.

    Raises ConfigurationError when the kind cannot be told.
    """
    resolved = kind or _guess_kind(source)
    if resolved not in ("utilization", "breakers", "health"):
        raise ConfigurationError(f"unknown signal kind {resolved!r}", field="kind")
    label = name or str(
        getattr(source, "name", None) or getattr(source, "__name__", None) or resolved
    )
    return Signal(label, resolved, source, thresholds)
