"""What a rate-limit storage provides.

Strategies do arithmetic (:mod:`sergas_guard.ratelimit.strategies`); a storage makes
one decision over one or more limits atomic, with a sync and an async face. A
multi-limit decision is all or nothing: if any limit rejects, none consumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult

__all__ = ["LimitCheck", "RateLimitStorage", "too_costly"]


class LimitCheck(NamedTuple):
    """One limit to apply to one storage key (the key already names identity and limit)."""

    key: str
    spec: LimitSpec


@runtime_checkable
class RateLimitStorage(Protocol):
    """Atomic multi-limit decisions. ``now_us`` overrides the storage's clock (tests only)."""

    def decide_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Decide ``checks`` together; one result per check, in order."""
        ...

    async def decide(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Async face of :meth:`decide_sync`."""
        ...

    def reset_sync(self, key: str) -> None:
        """Forget the state of every limit stored under ``key`` (an exact key or its prefix)."""
        ...

    async def reset(self, key: str) -> None:
        """Async face of :meth:`reset_sync`."""
        ...

    def clear_sync(self, prefix: str = "") -> int:
        """Delete every key starting with ``prefix``; returns how many."""
        ...

    async def clear(self, prefix: str = "") -> int:
        """Async face of :meth:`clear_sync`."""
        ...

    def close_sync(self) -> None:
        """Release connections (sync clients)."""
        ...

    async def aclose(self) -> None:
        """Release connections (async clients)."""
        ...


def too_costly(cost: int, spec: LimitSpec) -> ConfigurationError:
    """The error of every storage for a cost above what ``spec`` can ever admit at once."""
    return ConfigurationError(
        f"cost {cost} exceeds what {spec.describe()} can ever admit at once ({spec.capacity})",
        field="cost",
    )
