"""RateLimiter: one or more limits applied to identities through a storage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal, NamedTuple, cast

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError, RateLimitExceeded
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.ratelimit.result import (
    LimitSpec,
    RateLimitResult,
    RateLimitStrategy,
    most_restrictive,
)
from sergas_guard.ratelimit.stores.base import LimitCheck, RateLimitStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage

__all__ = ["GLOBAL_KEY", "RateLimitDecision", "RateLimiter", "StorageErrorPolicy"]

GLOBAL_KEY = "*"
StorageErrorPolicy = Literal["fail_open", "fail_closed", "fallback"]


class RateLimitDecision(NamedTuple):
    """A decision with the result of every limit, for headers that list each policy.

    ``result`` is the governing one (see :func:`most_restrictive`); ``governing`` its index.
    """

    key: str
    specs: tuple[LimitSpec, ...]
    results: tuple[RateLimitResult, ...]
    governing: int

    @property
    def result(self) -> RateLimitResult:
        return self.results[self.governing]

    @property
    def allowed(self) -> bool:
        return self.results[self.governing].allowed

    @property
    def spec(self) -> LimitSpec:
        return self.specs[self.governing]

    def exception(self) -> RateLimitExceeded:
        """The RateLimitExceeded that describes this (rejected) decision."""
        result = self.result
        return RateLimitExceeded(
            key=self.key,
            limit=self.spec.describe(),
            retry_after=result.retry_after,
            remaining=result.remaining,
            reset_after=result.reset_after,
        )


# tuple.__new__ straight from C: a NamedTuple's own __new__ is Python code, and these
# two are built on every decision.
_DecisionFields = tuple[str, tuple[LimitSpec, ...], tuple[RateLimitResult, ...], int]
_new_decision = cast(
    "Callable[[_DecisionFields], RateLimitDecision]", partial(tuple.__new__, RateLimitDecision)
)
_new_check = cast(
    "Callable[[tuple[str, LimitSpec]], LimitCheck]", partial(tuple.__new__, LimitCheck)
)


#: Identities whose storage keys a limiter remembers (a few MB at most); past it the
#: memory is emptied and refilled (amortized O(1), unlike evicting one at a time from
#: the front of a dict, which slows as deleted slots pile up there).
CHECKS_CACHE = 16_384


class _Tally:
    """This process's admitted units over the last window, for get_metrics (O(1), locked).

    The same two-counter estimate as the sliding-window strategy, on the clock's
    monotonic seconds (a C function for the system clock), kept in plain attributes
    because it runs on every decision.
    """

    def __init__(self, window_us: int, clock: Clock) -> None:
        self.window = window_us / 1_000_000
        self._monotonic = clock.monotonic
        self.index = 0.0
        self.current = 0
        self.previous = 0
        self.admitted = 0
        self.rejected = 0
        lock = threading.Lock()
        self._acquire = lock.acquire
        self._release = lock.release

    def record(self, allowed: bool, cost: int) -> None:
        index = self._monotonic() // self.window  # a whole float: no int() call needed
        self._acquire()
        try:
            if not allowed:
                self.rejected += 1
                return
            self.admitted += 1
            if index != self.index:
                self.previous = self.current if index - self.index == 1 else 0
                self.current = 0
                self.index = index
            self.current += cost
        finally:
            self._release()

    def in_window(self) -> float:
        position = self._monotonic() / self.window
        index = position // 1
        self._acquire()
        try:
            known, current, previous = self.index, self.current, self.previous
        finally:
            self._release()
        if index == known:
            return previous * (1.0 - (position - index)) + current
        if index == known + 1:
            return current * (1.0 - (position - index))
        return 0.0


class RateLimiter:
    """Applies a configuration's limits to keys (identities) through a storage.

    ``config`` is a :class:`RateLimitConfig` or a rate string (``"10/second; 1000/hour"``,
    then ``name``/``strategy``/``burst`` complete it). ``storage`` is a storage object,
    a storage URL, or ``None`` for a private :class:`MemoryStorage`. A request is
    admitted only if every limit admits it; a rejection consumes from none.
    ``on_storage_error`` decides what happens when a remote storage fails
    (see docs/storage.md); ``None`` lets the StorageError propagate.
    """

    def __init__(
        self,
        config: RateLimitConfig | str,
        storage: RateLimitStorage | str | None = None,
        *,
        name: str | None = None,
        strategy: RateLimitStrategy | str | None = None,
        burst: int | None = None,
        clock: Clock | None = None,
        on_storage_error: StorageErrorPolicy | None = "fallback",
        **storage_error_options: Any,
    ) -> None:
        if isinstance(config, str):
            options: dict[str, Any] = {"rate": config, "name": name or "default"}
            if strategy is not None:
                options["strategy"] = strategy
            if burst is not None:
                options["burst"] = burst
            config = RateLimitConfig(**options)
        elif not isinstance(config, RateLimitConfig):
            raise ConfigurationError(
                f"config must be a RateLimitConfig or a rate string, not {config!r:.80}",
                field="config",
            )
        elif name is not None or strategy is not None or burst is not None:
            raise ConfigurationError(
                "name, strategy and burst belong in the RateLimitConfig when one is given",
                field="config",
            )
        self.config = config
        self.specs = config.specs()
        self.capacity = min(spec.capacity for spec in self.specs)
        if storage is None:
            storage = MemoryStorage(clock=clock or SYSTEM_CLOCK)
        elif isinstance(storage, str):
            from sergas_guard.ratelimit.stores.url import storage_from_url

            storage = cast(RateLimitStorage, storage_from_url(storage))
        elif not isinstance(storage, RateLimitStorage):
            raise ConfigurationError(
                f"storage must be a rate-limit storage, a storage URL or None, not {storage!r:.80}",
                field="storage",
            )
        if on_storage_error is not None:
            storage = _guard_storage(storage, on_storage_error, storage_error_options)
        elif storage_error_options:
            raise ConfigurationError(
                f"{sorted(storage_error_options)[0]} applies only with an on_storage_error policy",
                field=sorted(storage_error_options)[0],
            )
        self.storage: RateLimitStorage = storage
        self.clock: Clock = clock or getattr(storage, "clock", None) or SYSTEM_CLOCK
        self._key_head = f"{config.key_prefix}:{config.name}:{{"
        self._tails_and_specs = tuple((f"}}:{spec.slug}", spec) for spec in self.specs)
        self._tally = _Tally(self.specs[0].window_us, self.clock)
        self._record = self._tally.record
        self._checks: dict[str, tuple[LimitCheck, ...]] = {}

    def __repr__(self) -> str:
        limits = "; ".join(spec.describe() for spec in self.specs)
        return (
            f"RateLimiter(name={self.config.name!r}, limits={limits!r}, storage={self.storage!r})"
        )

    @property
    def name(self) -> str:
        return self.config.name

    def checks(self, key: str) -> tuple[LimitCheck, ...]:
        """The storage keys and limits for an identity: ``<prefix>:<name>:{<key>}:<limit>``.

        Raises ConfigurationError when ``key`` is not a str.

        The identity sits in a Redis Cluster hash tag so all its limits share a slot.
        Remembered per identity (a bounded dict, emptied when full): one lookup per
        request for the clients of the moment.
        """
        remembered = self._checks
        try:  # free unless it raises (an unhashable key, refused just below)
            checks = remembered.get(key)
        except TypeError:
            checks = None
        if checks is None:
            if not isinstance(key, str):  # checked once per new identity, not per request
                raise ConfigurationError(
                    f"a rate-limit key must be a string, not {key!r:.80}", field="key"
                )
            head = self._key_head + key
            checks = tuple(_new_check((head + tail, spec)) for tail, spec in self._tails_and_specs)
            if len(remembered) >= CHECKS_CACHE:
                remembered.clear()
            remembered[key] = checks
        return checks

    def validate_cost(self, cost: object) -> None:
        """Raise ConfigurationError unless ``cost`` is a whole number this limiter can admit."""
        if type(cost) is not int or cost < 0:
            raise ConfigurationError(
                f"cost must be a whole number >= 0, not {cost!r}", field="cost"
            )
        if cost > self.capacity:
            raise ConfigurationError(
                f"cost {cost} exceeds what limiter {self.config.name!r} can ever admit at once "
                f"({self.capacity}); no amount of waiting would admit it",
                field="cost",
            )

    def _decision(
        self, key: str, cost: int, results: Sequence[RateLimitResult]
    ) -> RateLimitDecision:
        if len(results) == 1:
            if cost:
                self._record(results[0][0], cost)
            return _new_decision((key, self.specs, tuple(results), 0))
        governing = most_restrictive(results)
        if cost:
            self._record(results[governing][0], cost)
        return _new_decision((key, self.specs, tuple(results), governing))

    # -- async face -----------------------------------------------------------------

    async def decide(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitDecision:
        """Decide a request of ``cost`` units for ``key``, with every limit's result.

        Raises ConfigurationError for a cost that is not a whole number >= 0 or that
        exceeds what the limits can ever admit at once.
        """
        self.validate_cost(cost)
        return self._decision(key, cost, await self.storage.decide(self.checks(key), cost))

    async def hit(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitResult:
        """Count a request of ``cost`` units for ``key`` if every limit admits it."""
        return (await self.decide(key, cost)).result

    async def peek(self, key: str = GLOBAL_KEY) -> RateLimitResult:
        """Would a request of cost 1 pass now? Changes nothing."""
        return (await self.decide(key, 0)).result

    async def allow_request(self, cost: int = 1, key: str | None = None) -> tuple[bool, float]:
        """``(allowed, retry_after_seconds)``; without a key, one global bucket is used."""
        result = await self.hit(GLOBAL_KEY if key is None else key, cost)
        return result.allowed, result.retry_after

    async def acquire(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitResult:
        """Like :meth:`hit`, but raise RateLimitExceeded when rejected."""
        decision = await self.decide(key, cost)
        if not decision.allowed:
            raise decision.exception()
        return decision.result

    async def reset(self, key: str = GLOBAL_KEY) -> None:
        """Forget every limit's state for ``key``."""
        for check in self.checks(key):
            await self.storage.reset(check.key)

    # -- sync face ------------------------------------------------------------------

    def decide_sync(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitDecision:
        """Sync face of :meth:`decide` (no event loop involved)."""
        self.validate_cost(cost)
        return self._decision(key, cost, self.storage.decide_sync(self.checks(key), cost))

    def hit_sync(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitResult:
        return self.decide_sync(key, cost).result

    def peek_sync(self, key: str = GLOBAL_KEY) -> RateLimitResult:
        return self.decide_sync(key, 0).result

    def allow_request_sync(self, cost: int = 1, key: str | None = None) -> tuple[bool, float]:
        result = self.hit_sync(GLOBAL_KEY if key is None else key, cost)
        return result.allowed, result.retry_after

    def acquire_sync(self, key: str = GLOBAL_KEY, cost: int = 1) -> RateLimitResult:
        decision = self.decide_sync(key, cost)
        if not decision.allowed:
            raise decision.exception()
        return decision.result

    def reset_sync(self, key: str = GLOBAL_KEY) -> None:
        for check in self.checks(key):
            self.storage.reset_sync(check.key)

    # -- metrics --------------------------------------------------------------------

    def get_metrics(self, detailed: bool = False) -> dict[str, Any]:
        """This process's view of the first limit.

        ``current_requests`` is the units admitted here over the last window (sliding
        estimate, all keys), ``utilization_percent`` that against ``max_requests``, and
        ``requests_per_second`` its rate. ``detailed=True`` adds decision counts and the
        storage's own figures (e.g. errors, a failover state).
        """
        spec = self.specs[0]
        current = self._tally.in_window()
        metrics: dict[str, Any] = {
            "name": self.config.name,
            "strategy": spec.strategy.value,
            "max_requests": spec.limit,
            "window_seconds": spec.window_seconds,
            "current_requests": round(current),
            "utilization_percent": round(100.0 * current / spec.limit, 2),
            "requests_per_second": round(current / spec.window_seconds, 2),
        }
        if detailed:
            metrics["admitted"] = self._tally.admitted
            metrics["rejected"] = self._tally.rejected
            metrics["limits"] = [s.describe() for s in self.specs]
            storage_metrics = getattr(self.storage, "get_metrics", None)
            if callable(storage_metrics):
                metrics["storage"] = storage_metrics()
        return metrics

    async def aclose(self) -> None:
        await self.storage.aclose()

    def close(self) -> None:
        self.storage.close_sync()


def _guard_storage(
    storage: RateLimitStorage, policy: StorageErrorPolicy, options: dict[str, Any]
) -> RateLimitStorage:
    """Wrap a remote storage in a FailoverStorage applying ``policy`` (see docs/storage.md)."""
    if policy not in ("fail_open", "fail_closed", "fallback"):
        raise ConfigurationError(
            f"on_storage_error must be fail_open, fail_closed or fallback, not {policy!r}",
            field="on_storage_error",
        )
    from sergas_guard.ratelimit.stores.failover import FailoverConfig, FailoverStorage

    if isinstance(storage, MemoryStorage | FailoverStorage):
        # Memory cannot fail and a FailoverStorage already has its policy; the options
        # are still checked, so that a typo fails here rather than on the day of a move.
        FailoverConfig(policy=policy, **options)
        return storage
    return FailoverStorage(storage, policy=policy, **options)
