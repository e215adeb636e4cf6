"""The registry: runs checks concurrently, bounded in time, cached and single-flighted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health.aggregate import Results, summarize
from sergas_guard.health.base import HealthCheck, describe_error, to_observation
from sergas_guard.health.result import CheckResult, HealthStatus, Observation
from sergas_guard.health.result_cache import CachePolicy
from sergas_guard.validation import seconds

__all__ = ["DuplicateHealthCheckError", "HealthCheckRegistry"]

logger = logging.getLogger("sergas_guard.health")

DEFAULT_DEADLINE = 10.0


class DuplicateHealthCheckError(HealthCheckError, ValueError):
    """A check with the same name is already registered."""


@dataclasses.dataclass(slots=True)
class _Slot:
    check: HealthCheck
    result: CheckResult | None = None
    finished_at: float = -math.inf
    task: asyncio.Task[CheckResult] | None = None


def _grace(timeout: float) -> float:
    # The check's own timeout fires first and explains itself; ours only catches checks
    # that override check() without bounding it.
    return timeout * 1.1 + 0.05


def _log_transition(before: CheckResult | None, after: CheckResult) -> None:
    # Once per change, not once per run: a background runner would flood the log.
    previous = HealthStatus.HEALTHY if before is None else before.status
    if after.status is previous:
        return
    if after.status is HealthStatus.HEALTHY:
        logger.info("health check %s recovered (was %s)", after.name, previous.value)
    else:
        logger.warning(
            "health check %s is %s: %s", after.name, after.status.value, after.message or "-"
        )


class HealthCheckRegistry:
    """A named set of health checks, run together.

    :meth:`check_all` runs the selected checks concurrently, each under its own timeout
    and all under ``timeout`` (the overall deadline, seconds); a timeout or an exception
    becomes that check's UNHEALTHY result, never an exception. Results are cached per
    check (``cache_ttl`` for healthy results, ``failure_cache_ttl`` for others) for the
    callers that ask for it (the HTTP routes do), and concurrent callers share one run of
    each check, so a burst of requests costs one probe per check per TTL.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_DEADLINE,
        cache_ttl: float = 5.0,
        failure_cache_ttl: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.timeout = seconds(timeout, "timeout", error=HealthCheckError)
        self.clock = clock
        self._policy = CachePolicy(cache_ttl, failure_cache_ttl)
        self._slots: dict[str, _Slot] = {}
        self._background: asyncio.Task[None] | None = None

    # -- membership ---------------------------------------------------------------

    def register(self, check: HealthCheck) -> HealthCheck:
        """Add ``check``; returns it. Raises DuplicateHealthCheckError for a taken name."""
        if not isinstance(check, HealthCheck):
            raise HealthCheckError(f"{check!r} is not a HealthCheck")
        if check.name in self._slots:
            raise DuplicateHealthCheckError(f"a health check named {check.name!r} is registered")
        self._slots[check.name] = _Slot(check)
        return check

    def unregister(self, name: str) -> None:
        """Remove the check called ``name``; raises HealthCheckError if there is none."""
        if self._slots.pop(name, None) is None:
            raise HealthCheckError(f"no health check named {name!r}")

    def get(self, name: str) -> HealthCheck | None:
        """The check called ``name``, or None."""
        slot = self._slots.get(name)
        return None if slot is None else slot.check

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[HealthCheck]:
        return iter([slot.check for slot in self._slots.values()])

    @property
    def names(self) -> list[str]:
        """Names of the registered checks, in registration order."""
        return list(self._slots)

    # -- running ------------------------------------------------------------------

    async def check_all(
        self,
        *,
        tags: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        use_cache: bool = False,
        deadline: float | None = None,
    ) -> dict[str, CheckResult]:
        """Run the selected checks (all; or those with any of ``tags``; or ``names``).

        Every call gets fresh results (joining runs already under way); with
        ``use_cache=True``, as the HTTP routes call it, results still within their TTL
        are reused instead. ``deadline`` (seconds) overrides the registry's ``timeout``
        for this call.
        Returns ``{name: CheckResult}`` in registration order. Never raises for a failing
        check; raises HealthCheckError for an unknown name in ``names`` or a ``deadline``
        that is not a positive, finite number of seconds.
        """
        if deadline is not None:
            # 0, a negative or NaN deadline would report every check unhealthy unrun.
            deadline = seconds(deadline, "deadline", error=HealthCheckError)
        slots = self._select(tags, names)
        deadline = self.timeout if deadline is None else deadline
        now = self.clock.monotonic()
        results: dict[str, CheckResult] = {}
        running: dict[str, asyncio.Task[CheckResult]] = {}
        for slot in slots:
            cached = self._fresh(slot, now) if use_cache else None
            if cached is not None:
                results[slot.check.name] = cached
            else:
                running[slot.check.name] = self._start(slot)
        if running:
            # wait() neither cancels the shared runs on timeout nor when this caller is
            # cancelled: other requests may be waiting for the same runs.
            await asyncio.wait(set(running.values()), timeout=deadline)
        for name, task in running.items():
            results[name] = self._outcome(self._slots[name].check, task, deadline)
        return {slot.check.name: results[slot.check.name] for slot in slots}

    async def check(self, name: str, *, use_cache: bool = False) -> CheckResult:
        """Run (or, with ``use_cache``, reuse) the check called ``name``.

        Raises HealthCheckError if there is no such check.
        """
        results = await self.check_all(names=[name], use_cache=use_cache)
        return results[name]

    def last_results(self) -> dict[str, CheckResult]:
        """The latest result of every check that has one, without running anything."""
        return {name: slot.result for name, slot in self._slots.items() if slot.result is not None}

    @staticmethod
    def get_summary(results: Results) -> dict[str, Any]:
        """Summary of ``results``: ``status``, ``total_checks``, ``healthy``, ``degraded``,
        ``unhealthy``, ``unknown`` and per-check ``checks`` details."""
        return summarize(results)

    # -- background ---------------------------------------------------------------

    def start(self, interval: float) -> None:
        """Refresh every check every ``interval`` seconds in a background task.

        Requests then read the latest results instead of running checks. Call from a
        running event loop (e.g. an app's lifespan); raises HealthCheckError if already
        started or if ``interval`` is not positive.
        """
        if self._background is not None and not self._background.done():
            raise HealthCheckError("the background health runner is already running")
        policy = CachePolicy(self._policy.ttl, self._policy.failure_ttl, interval)
        self._policy = policy
        self._background = asyncio.get_running_loop().create_task(
            self._refresh_forever(interval), name="sergas-guard-health-background"
        )

    async def stop(self) -> None:
        """Stop the background runner (if any) and cancel checks still running."""
        task, self._background = self._background, None
        self._policy = CachePolicy(self._policy.ttl, self._policy.failure_ttl)
        tasks: list[asyncio.Task[Any]] = [
            slot.task for slot in self._slots.values() if slot.task is not None
        ]
        if task is not None:
            tasks.append(task)
        for pending in tasks:
            pending.cancel()
        for pending in tasks:
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await pending

    @contextlib.asynccontextmanager
    async def running(self, interval: float) -> AsyncIterator[HealthCheckRegistry]:
        """``async with registry.running(30):`` — the background runner for a block."""
        self.start(interval)
        try:
            yield self
        finally:
            await self.stop()

    async def _refresh_forever(self, interval: float) -> None:
        while True:
            try:
                await self.check_all(use_cache=False)
            except Exception as exc:  # a bug must not end the refreshing for good
                logger.error("background health refresh failed: %s", describe_error(exc))
            await asyncio.sleep(interval)

    # -- internals ----------------------------------------------------------------

    def _select(self, tags: Iterable[str] | None, names: Iterable[str] | None) -> list[_Slot]:
        if names is not None:
            wanted = list(names)
            unknown = [name for name in wanted if name not in self._slots]
            if unknown:
                raise HealthCheckError(f"no health check named {unknown[0]!r}")
            return [self._slots[name] for name in dict.fromkeys(wanted)]
        if tags is None:
            return list(self._slots.values())
        wanted_tags = frozenset(tags)
        return [slot for slot in self._slots.values() if slot.check.tags & wanted_tags]

    def _fresh(self, slot: _Slot, now: float) -> CheckResult | None:
        result = slot.result
        if result is None:
            return None
        if self._policy.is_fresh(result, now - slot.finished_at, slot.check.timeout):
            return result
        return None

    def _start(self, slot: _Slot) -> asyncio.Task[CheckResult]:
        loop = asyncio.get_running_loop()
        task = slot.task
        if task is not None and not task.done() and task.get_loop() is loop:
            return task  # single flight: join the run already under way
        task = loop.create_task(self._run(slot.check), name=f"health:{slot.check.name}")
        slot.task = task

        def finished(done: asyncio.Task[CheckResult]) -> None:
            if slot.task is done:
                slot.task = None
            if not done.cancelled():
                _log_transition(slot.result, done.result())
                slot.result = done.result()
                slot.finished_at = self.clock.monotonic()

        task.add_done_callback(finished)
        return task

    async def _run(self, check: HealthCheck) -> CheckResult:
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(_grace(check.timeout)):
                outcome: Any = await check.check()
            if isinstance(outcome, CheckResult):
                return outcome
            observation = to_observation(outcome)
        except TimeoutError:
            observation = Observation(HealthStatus.UNHEALTHY, f"timed out after {check.timeout:g}s")
        except Exception as exc:
            observation = Observation(HealthStatus.UNHEALTHY, describe_error(exc, *check.secrets()))
        return check.make_result(observation, self.clock.monotonic() - started)

    @staticmethod
    def _outcome(
        check: HealthCheck, task: asyncio.Task[CheckResult], deadline: float
    ) -> CheckResult:
        if task.done() and not task.cancelled():
            return task.result()
        message = (
            "cancelled"
            if task.cancelled()
            else f"did not finish within the deadline of {deadline:g}s"
        )
        return check.make_result(Observation(HealthStatus.UNHEALTHY, message), deadline)
