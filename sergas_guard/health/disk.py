"""Disk health: free space under a path against thresholds."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health._threads import SyncRunner
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck
from sergas_guard.health.result import HealthStatus, Observation
from sergas_guard.health.thresholds import ratio_in_range
from sergas_guard.validation import whole

__all__ = ["DiskSpaceHealthCheck", "judge_disk"]


def judge_disk(
    free: int, total: int, *, degraded_free_ratio: float, min_free_ratio: float, min_free_bytes: int
) -> Observation:
    """Pure verdict on a filesystem's free space.

    UNHEALTHY below ``min_free_bytes`` or ``min_free_ratio`` of the total, DEGRADED below
    ``degraded_free_ratio``; the observed value is the used share in percent.
    """
    free_ratio = free / total if total > 0 else 0.0
    used_percent = round((1 - free_ratio) * 100, 2)
    details = {"free_bytes": free, "total_bytes": total, "free_percent": round(free_ratio * 100, 2)}
    if free < min_free_bytes or free_ratio < min_free_ratio:
        status, message = HealthStatus.UNHEALTHY, f"only {free} bytes ({free_ratio:.1%}) free"
    elif free_ratio < degraded_free_ratio:
        status, message = HealthStatus.DEGRADED, f"{free_ratio:.1%} free"
    else:
        status, message = HealthStatus.HEALTHY, ""
    return Observation(status, message, used_percent, "percent", details)


class DiskSpaceHealthCheck(HealthCheck):
    """Checks the free space of the filesystem holding ``path``.

    UNHEALTHY when less than ``min_free_bytes`` (10 MiB, as Spring Boot's default) or
    ``min_free_ratio`` is free, DEGRADED below ``degraded_free_ratio``. The
    ``statvfs`` call runs in a thread of its own, since a hung network filesystem
    blocks it. Raises HealthCheckError for a bad threshold.
    """

    component_type = "system"
    measurement = "utilization"

    def __init__(
        self,
        name: str = "disk",
        path: str | os.PathLike[str] = ".",
        *,
        degraded_free_ratio: float = 0.10,
        min_free_ratio: float = 0.02,
        min_free_bytes: int = 10 * 1024 * 1024,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(name, timeout=timeout, critical=critical, tags=tags, clock=clock)
        if not ratio_in_range(degraded_free_ratio) or not ratio_in_range(min_free_ratio):
            raise HealthCheckError(
                f"{name!r}: free-space ratios must be in (0, 1]", field="min_free_ratio"
            )
        if min_free_ratio > degraded_free_ratio:
            raise HealthCheckError(
                f"{name!r}: min_free_ratio must not exceed degraded_free_ratio",
                field="min_free_ratio",
            )
        whole(min_free_bytes, "min_free_bytes", minimum=0, error=HealthCheckError)
        if not isinstance(path, str | os.PathLike):
            raise HealthCheckError(f"path must be a file path, not {path!r:.80}", field="path")
        self.path = os.fspath(path)
        self.degraded_free_ratio = degraded_free_ratio
        self.min_free_ratio = min_free_ratio
        self.min_free_bytes = min_free_bytes
        self._runner = SyncRunner(name)

    async def probe(self) -> Observation:
        usage = await self._runner.run(shutil.disk_usage, self.path)
        return judge_disk(
            usage.free,
            usage.total,
            degraded_free_ratio=self.degraded_free_ratio,
            min_free_ratio=self.min_free_ratio,
            min_free_bytes=self.min_free_bytes,
        )
