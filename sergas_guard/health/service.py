"""A health check around any callable of the user's: sync or async, bool or status."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health._threads import SyncRunner
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck, ProbeOutcome

__all__ = ["ServiceHealthCheck"]

CheckFunc = Callable[[], ProbeOutcome] | Callable[[], Awaitable[ProbeOutcome]]


class ServiceHealthCheck(HealthCheck):
    """Checks a service by calling ``check_func()``.

    The function may be sync (run in a thread of its own, so it cannot block the event
    loop) or async. It returns ``True``/``None`` (healthy), ``False`` (unhealthy), a
    :class:`~sergas_guard.health.HealthStatus`, an
    :class:`~sergas_guard.health.Observation` or a
    :class:`~sergas_guard.health.CheckResult`; raising means unhealthy. A sync function
    that is still blocked from a previous run is not started again: the check reports
    UNHEALTHY until it returns. Raises HealthCheckError if ``check_func`` is not callable.
    """

    def __init__(
        self,
        name: str,
        check_func: CheckFunc,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        component_type: str = "component",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(name, timeout=timeout, critical=critical, tags=tags, clock=clock)
        if not callable(check_func):
            raise HealthCheckError(f"check_func of {name!r} must be callable")
        self.check_func = check_func
        self.component_type = component_type
        self._is_async = inspect.iscoroutinefunction(check_func) or inspect.iscoroutinefunction(
            getattr(check_func, "__call__", None)  # noqa: B004  # async callable objects
        )
        self._runner = SyncRunner(name)

    async def probe(self) -> ProbeOutcome:
        if self._is_async:
            outcome: Any = await self.check_func()  # type: ignore[misc]
        else:
            outcome = await self._runner.run(self.check_func)
            if inspect.isawaitable(outcome):  # a sync function that returned a coroutine
                outcome = await outcome
        return outcome  # type: ignore[no-any-return]
