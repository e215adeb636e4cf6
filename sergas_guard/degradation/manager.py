"""DegradationManager: the service's degradation level, its fallbacks, and its flags.

The effective level is the higher of the level an operator set
(:meth:`DegradationManager.set_degradation_level`) and the automatic level computed
from signals (:meth:`DegradationManager.add_signal`). Signals are read at most once
per ``evaluation_interval`` when the level is asked for (no background thread), or
on a schedule by :meth:`DegradationManager.run_auto` on an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, model_validator

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.config import GuardModel
from sergas_guard.degradation.auto import AutoState, Reading, step
from sergas_guard.degradation.flags import DEFAULT_REFRESH_INTERVAL, FeatureFlags
from sergas_guard.degradation.levels import DegradationLevel, LevelChange, parse_level
from sergas_guard.degradation.service_call import ServiceCalls
from sergas_guard.degradation.signals import Signal, SignalKind, Thresholds, signal_for
from sergas_guard.errors import ConfigurationError, FeatureDisabledError, StorageUnavailable
from sergas_guard.validation import MAX_SECONDS

__all__ = ["DegradationConfig", "DegradationManager", "LevelListener"]

logger = logging.getLogger("sergas_guard.degradation")

LevelListener = Callable[[LevelChange], None]

# The field under which the operator's level is shared beside the flags in Redis.
LEVEL_SETTING = "degradation_level"


class DegradationConfig(GuardModel):
    """Settings of a DegradationManager (the original ``DEGRADATION_CONFIG`` keys and more)."""

    auto_degrade_threshold: float = Field(default=0.85, gt=0.0, le=1.0)
    critical_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    hold_seconds: float = Field(default=60.0, ge=0.0, le=MAX_SECONDS)
    evaluation_interval: float = Field(default=1.0, ge=0.0, le=MAX_SECONDS)
    feature_flags_path: str | None = None
    refresh_interval: float = Field(default=DEFAULT_REFRESH_INTERVAL, ge=0.0, le=MAX_SECONDS)

    @model_validator(mode="after")
    def _ordered(self) -> DegradationConfig:
        if self.critical_threshold < self.auto_degrade_threshold:
            raise ValueError("critical_threshold must not be below auto_degrade_threshold")
        return self


class DegradationManager(ServiceCalls):
    """Degradation level, fallback registry and feature flags of one service.

    ``feature_flags`` defaults to a new :class:`FeatureFlags` (on ``feature_flags_path``
    and ``storage`` when given). ``circuit_breaker_manager``: calls made through
    :meth:`execute_with_fallback` go through the named service's breaker.
    Raises ConfigurationError for invalid settings.
    """

    def __init__(
        self,
        feature_flags: FeatureFlags | None = None,
        circuit_breaker_manager: Any = None,
        *,
        auto_degrade_threshold: float = 0.85,
        critical_threshold: float = 0.95,
        hold_seconds: float = 60.0,
        evaluation_interval: float = 1.0,
        feature_flags_path: str | None = None,
        storage: Any = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = DegradationConfig(
            auto_degrade_threshold=auto_degrade_threshold,
            critical_threshold=critical_threshold,
            hold_seconds=hold_seconds,
            evaluation_interval=evaluation_interval,
            feature_flags_path=feature_flags_path,
        )
        if circuit_breaker_manager is not None and not callable(
            getattr(circuit_breaker_manager, "get_or_create", None)
        ):
            raise ConfigurationError(
                "circuit_breaker_manager must have get_or_create(name)",
                field="circuit_breaker_manager",
            )
        super().__init__(circuit_breaker_manager)
        self.clock = clock
        if feature_flags is not None and not isinstance(feature_flags, FeatureFlags):
            raise ConfigurationError(
                f"feature_flags must be a FeatureFlags, not {feature_flags!r:.80}",
                field="feature_flags",
            )
        if feature_flags is None:
            feature_flags = FeatureFlags(path=feature_flags_path, storage=storage, clock=clock)
        elif feature_flags_path is not None or storage is not None:
            raise ConfigurationError(
                "give feature_flags, or feature_flags_path/storage to build them, not both",
                field="feature_flags",
            )
        self.feature_flags = feature_flags
        feature_flags.level_source = lambda: self.level
        self._thresholds = Thresholds(auto_degrade_threshold, critical_threshold)
        self._manual = DegradationLevel.NORMAL
        self._auto = AutoState()
        self._effective = DegradationLevel.NORMAL
        self._signals: list[Signal] = []
        self._readings: list[Reading] = []
        self._next_evaluation = 0.0
        self._next_level_sync = 0.0
        self._listeners: list[LevelListener] = []
        self._lock = threading.RLock()

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | DegradationConfig, **kwargs: Any
    ) -> DegradationManager:
        """Build from a mapping like the original ``DEGRADATION_CONFIG``.

        Raises ConfigurationError naming the bad key.
        """
        settings = (
            config
            if isinstance(config, DegradationConfig)
            else DegradationConfig.validate_mapping(config)
        )
        if "feature_flags" not in kwargs:
            kwargs["feature_flags"] = FeatureFlags(
                path=settings.feature_flags_path,
                storage=kwargs.pop("storage", None),
                refresh_interval=settings.refresh_interval,
                clock=kwargs.get("clock", SYSTEM_CLOCK),
            )
        return cls(
            auto_degrade_threshold=settings.auto_degrade_threshold,
            critical_threshold=settings.critical_threshold,
            hold_seconds=settings.hold_seconds,
            evaluation_interval=settings.evaluation_interval,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"DegradationManager(level={self._effective.label}, signals={len(self._signals)})"

    # -- the level -----------------------------------------------------------------
    @property
    def level(self) -> DegradationLevel:
        """The effective level: max(operator's level, automatic level). Reading it may
        re-evaluate synchronous signals (at most once per ``evaluation_interval``)."""
        now = self.clock.monotonic()
        if self.feature_flags.shared and now >= self._next_level_sync:
            self._next_level_sync = now + self.feature_flags.refresh_interval
            # On an outage (which the flags already log) keep the level we know.
            with contextlib.suppress(StorageUnavailable):
                self._adopt_shared(self.feature_flags.shared_setting(LEVEL_SETTING))
        if self._signals and now >= self._next_evaluation:
            self.evaluate()
        return self._effective

    def _adopt_shared(self, raw: str | None) -> None:
        """Follow an operator's level set through another worker."""
        if raw is None:
            return
        try:
            level = parse_level(raw)
        except ValueError:
            logger.error("ignoring the shared degradation level %r: not a level", raw)
            return
        with self._lock:
            if level == self._manual:
                return
            self._manual = level
        self._settle("manual", "set by an operator through another worker")

    async def refresh_shared_level(self) -> None:
        """Re-read the operator's level shared through Redis now (async; never raises)."""
        with contextlib.suppress(StorageUnavailable):
            self._adopt_shared(await self.feature_flags.shared_setting_async(LEVEL_SETTING))

    @property
    def degradation_level(self) -> DegradationLevel:
        """Alias of :attr:`level`."""
        return self.level

    @property
    def manual_level(self) -> DegradationLevel:
        """The level an operator set (the floor of the effective level)."""
        return self._manual

    @property
    def auto_level(self) -> DegradationLevel:
        """The level the signals ask for, after hysteresis."""
        return self._auto.level

    @property
    def readings(self) -> list[Reading]:
        """What each signal said at the last evaluation."""
        return list(self._readings)

    def set_degradation_level(
        self, level: DegradationLevel | str, reason: str = "set by operator"
    ) -> None:
        """Set the operator's level; the automatic mode can raise the effective level above it,
        never below. With flags shared through Redis, every worker follows it within the
        flags' refresh interval. Raises ConfigurationError for an unknown level."""
        try:
            parsed = parse_level(level)
        except ValueError as exc:
            raise ConfigurationError(str(exc), field="level") from None
        with self._lock:
            self._manual = parsed
        self._settle("manual", reason)
        try:
            self.feature_flags.set_shared_setting(LEVEL_SETTING, parsed.label)
        except StorageUnavailable as exc:
            logger.error("degradation level %s applies to this worker only: %s", parsed.label, exc)

    def _settle(self, source: str, reason: str) -> None:
        with self._lock:
            old = self._effective
            new = max(self._manual, self._auto.level)
            self._effective = new
        if new == old:
            return
        change = LevelChange(
            old, new, "manual" if source == "manual" else "auto", reason, self.clock.time()
        )
        log = logger.warning if new > old else logger.info
        log("degradation level %s -> %s (%s: %s)", old.label, new.label, change.source, reason)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                logger.exception("degradation listener %r failed", listener)

    def add_listener(self, listener: LevelListener) -> None:
        """Call ``listener(LevelChange)`` on every change of the effective level."""
        self._listeners.append(listener)

    def remove_listener(self, listener: LevelListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # -- automatic mode ------------------------------------------------------------
    def add_signal(
        self, source: Any, *, name: str | None = None, kind: SignalKind | None = None
    ) -> Signal:
        """Watch a load or health source (limiter, queue, breaker or manager, health registry,
        or a callable); see :mod:`.signals`. Raises ConfigurationError if it is not one."""
        signal = signal_for(source, self._thresholds, name=name, kind=kind)
        with self._lock:
            self._signals.append(signal)
            self._next_evaluation = 0.0
        return signal

    def _apply_readings(self, readings: list[Reading]) -> DegradationLevel:
        target = max((r.level for r in readings), default=DegradationLevel.NORMAL)
        now = self.clock.monotonic()
        with self._lock:
            self._readings = readings
            self._next_evaluation = now + self.config.evaluation_interval
            old = self._auto.level
            self._auto = step(self._auto, target, now, self.config.hold_seconds)
            new = self._auto.level
        if new != old:
            pushing = [r for r in readings if r.level >= new] if new > old else readings
            why = "; ".join(f"{r.signal}: {r.detail}" for r in pushing) or "no signals"
            if new < old:
                why = f"signals below {old.label} for {self.config.hold_seconds:g}s ({why})"
            self._settle("auto", why)
        return self._effective

    def _read(self, signal: Signal, reading: Callable[[], Reading | None]) -> Reading | None:
        try:
            return reading()
        except Exception as exc:
            # A broken signal must not take the service down; it is simply not counted.
            logger.warning("degradation signal %s could not be read: %s", signal.name, exc)
            return None

    def evaluate(self) -> DegradationLevel:
        """Read every signal now (synchronously) and update the automatic level."""
        readings = [self._read(s, s.read) for s in list(self._signals)]
        return self._apply_readings([r for r in readings if r is not None])

    async def evaluate_async(self) -> DegradationLevel:
        """Read every signal now, awaiting async ones (a health registry's checks)."""
        if self.feature_flags.shared:
            await self.refresh_shared_level()
        readings: list[Reading] = []
        for signal in list(self._signals):
            try:
                reading = await signal.read_async()
            except Exception as exc:
                logger.warning("degradation signal %s could not be read: %s", signal.name, exc)
                continue
            if reading is not None:
                readings.append(reading)
        return self._apply_readings(readings)

    async def run_auto(self, interval: float | None = None) -> None:
        """Evaluate signals every ``interval`` seconds (default ``evaluation_interval``)
        until cancelled; run it as a task on the application's event loop."""
        period = interval if interval is not None else max(self.config.evaluation_interval, 0.1)
        while True:
            await self.evaluate_async()
            await asyncio.sleep(period)

    # -- flags ---------------------------------------------------------------------
    def _switched_off(self, service_name: str, user_id: str | None) -> FeatureDisabledError | None:
        if service_name not in self.feature_flags:
            return None
        evaluation = self.feature_flags.evaluate(service_name, user_id)
        return (
            None
            if evaluation.enabled
            else FeatureDisabledError(service_name, reason=evaluation.reason)
        )

    def is_feature_enabled(
        self, name: str, user_id: object = None, context: Mapping[str, Any] | None = None
    ) -> bool:
        """Shorthand for ``feature_flags.is_enabled`` (which already honours the level)."""
        return self.feature_flags.is_enabled(name, user_id, context)

    def status(self) -> dict[str, Any]:
        """The level, what set it, and the signals' last readings, JSON-ready."""
        level = self.level
        return {
            "level": level.label,
            "manual_level": self._manual.label,
            "auto_level": self._auto.level.label,
            "signals": [
                {"name": r.signal, "level": r.level.label, "detail": r.detail}
                for r in self._readings
            ],
            "services": {name: [s.name for s in chain] for name, chain in self.fallbacks().items()},
        }
