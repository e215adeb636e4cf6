"""Fixtures of the degradation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sergas_guard.clock import ManualClock
from sergas_guard.degradation import set_default_flags


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(autouse=True)
def _fresh_default_flags() -> Iterator[None]:
    """Each test starts with an empty process-wide FeatureFlags."""
    set_default_flags(None)
    yield
    set_default_flags(None)
