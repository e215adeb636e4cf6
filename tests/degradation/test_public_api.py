"""The names the design contract promises, importable from sergas_guard.degradation."""

from __future__ import annotations

import subprocess
import sys

import sergas_guard.degradation as degradation

CONTRACT = [
    "DegradationManager",
    "DegradationLevel",
    "FeatureFlags",
    "CachedFallback",
    "StaticFallback",
    "ServiceFallback",
    "with_fallback",
    "feature_flag",
    "FallbackStrategy",
    "OpenFeatureProvider",
]


def test_contract_names_are_exported() -> None:
    for name in CONTRACT:
        assert name in degradation.__all__
        assert getattr(degradation, name) is not None


def test_every_exported_name_resolves() -> None:
    for name in degradation.__all__:
        assert getattr(degradation, name) is not None


def test_importing_the_package_loads_neither_openfeature_nor_the_router() -> None:
    code = (
        "import sys, sergas_guard.degradation;"
        "print('openfeature' in sys.modules, 'sergas_guard.degradation.router' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
