"""Graceful degradation: feature flags, fallbacks, and degradation levels.

* :class:`FeatureFlags` and ``@feature_flag``: switches with allow/deny lists and
  sticky percentage rollout, in memory, a JSON file, or Redis shared by all workers.
* Fallbacks: :class:`CachedFallback`, :class:`StaticFallback`, :class:`ServiceFallback`
  (the :class:`FallbackStrategy` protocol) and ``@with_fallback``.
* :class:`DegradationManager` and :class:`DegradationLevel`: the service's level, set by
  an operator or by load and health signals, which turns non-essential flags off.
* :class:`OpenFeatureProvider` (needs ``openfeature-sdk``) and
  :func:`degradation_router` (a Starlette router for operators) load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sergas_guard.degradation.definitions import FlagDefinition, FlagEvaluation
from sergas_guard.degradation.fallbacks import (
    CachedFallback,
    FallbackAnswer,
    FallbackContext,
    FallbackInfo,
    FallbackMiss,
    FallbackStrategy,
    ServiceFallback,
    StaticFallback,
    last_fallback,
)
from sergas_guard.degradation.feature_flag import default_flags, feature_flag, set_default_flags
from sergas_guard.degradation.flags import FeatureFlags, FlagState
from sergas_guard.degradation.levels import DegradationLevel, LevelChange
from sergas_guard.degradation.manager import DegradationConfig, DegradationManager
from sergas_guard.degradation.with_fallback import with_fallback

if TYPE_CHECKING:
    from sergas_guard.degradation.openfeature_provider import OpenFeatureProvider
    from sergas_guard.degradation.router import degradation_router

__all__ = [
    "CachedFallback",
    "DegradationConfig",
    "DegradationLevel",
    "DegradationManager",
    "FallbackAnswer",
    "FallbackContext",
    "FallbackInfo",
    "FallbackMiss",
    "FallbackStrategy",
    "FeatureFlags",
    "FlagDefinition",
    "FlagEvaluation",
    "FlagState",
    "LevelChange",
    "OpenFeatureProvider",
    "ServiceFallback",
    "StaticFallback",
    "default_flags",
    "degradation_router",
    "feature_flag",
    "last_fallback",
    "set_default_flags",
    "with_fallback",
]


def __getattr__(name: str) -> Any:
    # Optional parts load on first use, so importing this package needs neither
    # openfeature-sdk nor the router's imports.
    if name == "OpenFeatureProvider":
        from sergas_guard.degradation.openfeature_provider import OpenFeatureProvider

        return OpenFeatureProvider
    if name == "degradation_router":
        from sergas_guard.degradation.router import degradation_router

        return degradation_router
    raise AttributeError(f"module 'sergas_guard.degradation' has no attribute {name!r}")
