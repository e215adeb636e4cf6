"""What the asyncio and the threaded queue share around their core: settings, metrics,
and the items a stopped queue hands back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sergas_guard import validation
from sergas_guard.clock import Clock
from sergas_guard.queueing.core import QueueCore
from sergas_guard.queueing.discipline import Entry
from sergas_guard.queueing.job import Job, ReturnedItem
from sergas_guard.queueing.policy import LimitPolicy

__all__ = ["QueueFace"]


class QueueFace:
    """The part of a queue face that does not depend on how its workers run."""

    def __init__(
        self,
        name: str,
        max_size: int,
        max_workers: int,
        timeout: float | None,
        *,
        limit: str | LimitPolicy,
        target_delay: float,
        interval: float,
        codel: bool,
        adaptive_lifo: bool,
        clock: Clock,
    ) -> None:
        """Raises ConfigurationError naming the field for any bad setting."""
        self.name = validation.name(name)
        self._core: QueueCore[Job] = QueueCore(
            max_size=max_size,
            max_workers=max_workers,
            timeout=timeout,
            limit=limit,
            target_delay=target_delay,
            interval=interval,
            codel=codel,
            adaptive_lifo=adaptive_lifo,
        )
        self._clock = clock
        self._monotonic = clock.monotonic
        self._state = "new"  # then "running", "stopping", "stopped"

    @property
    def core(self) -> QueueCore[Job]:
        """The bookkeeping this face drives (for the backpressure handler and tests)."""
        return self._core

    @property
    def policy(self) -> LimitPolicy:
        """The concurrency limit policy the workers follow."""
        return self._core.policy

    def _metrics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self._core.metrics(self._monotonic()),
            "limit_policy": type(self._core.policy).__name__,
            "state": self._state,
        }

    @staticmethod
    def _returned(entries: Iterable[Entry[Job]]) -> list[ReturnedItem]:
        return [
            ReturnedItem(e.payload.fn, e.payload.args, e.payload.kwargs, e.priority, e.request_id)
            for e in entries
        ]
