"""Keeping rate limiting up when its remote storage fails.

:class:`FailoverStorage` wraps a storage (normally a :class:`RedisStorage`) and applies
a policy when it fails:

``fail_open``
    admit, with results of type :class:`UncheckedResult` (nothing was counted);
``fail_closed``
    refuse: raise :class:`StorageFailClosed` (a ``StorageUnavailable`` carrying
    ``retry_after``), which web edges answer with 503, never 500;
``fallback``
    decide with a local :class:`MemoryStorage` enforcing ``fallback_share`` of each
    limit (results of type :class:`FallbackResult`), so the process keeps protecting
    itself while counting alone.

A circuit (the breaker state machine of :mod:`sergas_guard.circuit_breaker.core`)
stops sending requests to a storage that failed ``failure_threshold`` times in a row:
for ``cooldown_seconds`` every decision takes the policy at once (microseconds, not a
timeout each), then one probe goes through and its outcome closes or re-opens the
circuit. Errors are counted in :meth:`FailoverStorage.get_metrics` and logged once
per state change.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import BreakerCore, Decision
from sergas_guard.circuit_breaker.state import CircuitState, EventKind
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.config import GuardModel
from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult
from sergas_guard.secrets import scrub, secrets_of
from sergas_guard.storage.base import LimitCheck, RateLimitStorage
from sergas_guard.storage.memory import MemoryStorage
from sergas_guard.validation import MAX_SECONDS

__all__ = [
    "FailoverConfig",
    "FailoverStorage",
    "FallbackResult",
    "StorageFailClosed",
    "UncheckedResult",
]

logger = logging.getLogger("sergas_guard.storage.failover")

Policy = Literal["fail_open", "fail_closed", "fallback"]
T = TypeVar("T")


class UncheckedResult(RateLimitResult):
    """An admission under ``fail_open``: the storage could not be asked, nothing was counted."""

    __slots__ = ()
    policy: ClassVar[str] = "fail_open"


class FallbackResult(RateLimitResult):
    """A decision of the local fallback storage (this process's share of the limit)."""

    __slots__ = ()
    policy: ClassVar[str] = "fallback"


class StorageFailClosed(StorageUnavailable):
    """The storage is unavailable and the policy is ``fail_closed``: the request is refused.

    ``retry_after`` is the number of seconds until the storage is tried again.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailoverConfig(GuardModel):
    """What :class:`FailoverStorage` does when its storage fails."""

    policy: Policy = "fallback"
    #: Consecutive failures that open the circuit.
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    #: Seconds the circuit stays open before one probe is let through.
    cooldown_seconds: float = Field(default=5.0, gt=0, le=MAX_SECONDS)
    #: Fraction of each limit the local fallback enforces (1/N for N processes).
    fallback_share: float = Field(default=1.0, gt=0, le=1)
    #: Keys the local fallback holds at most (LRU beyond).
    fallback_max_keys: int = Field(default=100_000, ge=1)

    @field_validator("policy", mode="before")
    @classmethod
    def _known_policy(cls, value: Any) -> Any:
        # pydantic's own message lists the literal's values; ours names the value too.
        if value not in ("fail_open", "fail_closed", "fallback"):
            raise ConfigurationError(
                f"policy must be fail_open, fail_closed or fallback, not {value!r:.80}",
                field="policy",
            )
        return value

    def breaker(self) -> CircuitBreakerConfig:
        """The breaker that judges the storage: N failures out of the last N calls open it."""
        return CircuitBreakerConfig(
            window_type="count",
            window_size=self.failure_threshold,
            minimum_calls=self.failure_threshold,
            failure_rate_threshold=100.0,
            wait_duration_in_open=self.cooldown_seconds,
            permitted_calls_in_half_open=1,
            # A probe whose caller vanished frees its slot after this long.
            probe_timeout=max(10.0, self.cooldown_seconds),
        )


class FailoverStorage:
    """A storage that survives the failure of the storage it wraps (see the module doc).

    ``options`` are :class:`FailoverConfig` fields. ``ConfigurationError`` (a caller's
    mistake, e.g. a cost above the limit) passes through; no other error of the
    wrapped storage reaches the caller of :meth:`decide`, except the deliberate
    :class:`StorageFailClosed` under ``fail_closed``. :meth:`reset` and :meth:`clear`
    raise ``StorageUnavailable`` when the storage cannot be reached (after applying
    them to the fallback).
    """

    def __init__(
        self,
        storage: RateLimitStorage,
        policy: Policy = "fallback",
        *,
        clock: Clock = SYSTEM_CLOCK,
        **options: Any,
    ) -> None:
        if isinstance(storage, FailoverStorage):
            raise ConfigurationError("the storage is already a FailoverStorage", field="storage")
        if not isinstance(storage, RateLimitStorage):
            raise ConfigurationError(
                f"storage must be a rate-limit storage, not {storage!r:.80}", field="storage"
            )
        self.config = FailoverConfig(policy=policy, **options)
        self.primary = storage
        self.clock = clock
        self.fallback = MemoryStorage(max_keys=self.config.fallback_max_keys, clock=clock)
        self._core = BreakerCore("rate-limit storage", self.config.breaker(), clock.monotonic())
        self._lock = threading.Lock()
        self._shares: dict[LimitSpec, LimitSpec] = {}
        self.errors = 0
        self.errors_by_type: dict[str, int] = {}
        self.skipped = 0
        self.degraded = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return f"FailoverStorage({self.primary!r}, policy={self.config.policy!r})"

    def __getattr__(self, name: str) -> Any:
        # A transparent wrapper: what it does not define (``client``, ``sync_client``,
        # ``is_cluster``, ``key_prefix``...) is the wrapped storage's.
        if name.startswith("_") or name == "primary":
            raise AttributeError(name)
        return getattr(self.primary, name)

    @property
    def url(self) -> Any:
        """The wrapped storage's URL (None when it was built from a client)."""
        return getattr(self.primary, "url", None)

    @property
    def policy(self) -> Policy:
        return self.config.policy

    @property
    def state(self) -> CircuitState:
        """``closed`` (using the storage), ``open`` (skipping it) or ``half_open`` (probing)."""
        with self._lock:
            return self._core.snapshot(self.clock.monotonic()).state

    # -- the circuit ----------------------------------------------------------------

    def _acquire(self) -> Decision:
        with self._lock:
            decision = self._core.acquire(self.clock.monotonic())
            events = self._core.drain_events()
            if not decision.permitted:
                self.skipped += 1
        self._log(events)
        return decision

    def _record(self, permit: Decision, error: Exception | None) -> None:
        with self._lock:
            if error is not None:
                self.errors += 1
                name = type(error).__name__
                self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
                self.last_error = scrub(f"{name}: {error}", *secrets_of(self.primary))
            self._core.record(
                self.clock.monotonic(), permit.generation, permit.probe, 0.0, error is not None
            )
            events = self._core.drain_events()
        self._log(events)

    def _release(self, permit: Decision) -> None:
        with self._lock:
            self._core.release(self.clock.monotonic(), permit.generation, permit.probe)

    def _log(self, events: Sequence[Any]) -> None:
        for event in events:
            if event.kind is not EventKind.STATE_TRANSITION:
                continue
            if event.to_state is CircuitState.OPEN:
                logger.warning(
                    "rate-limit storage %r failing (%s); policy %s, next try in %.1fs",
                    self.primary,
                    self.last_error,
                    self.policy,
                    self.config.cooldown_seconds,
                )
            elif event.to_state is CircuitState.HALF_OPEN:
                logger.info("rate-limit storage %r: cool-down over, probing it", self.primary)
            elif event.to_state is CircuitState.CLOSED:
                logger.warning(
                    "rate-limit storage %r is back; decisions are shared again", self.primary
                )

    def _retry_after(self) -> float:
        with self._lock:
            core = self._core
            if core.state is CircuitState.OPEN:
                return core.retry_after(self.clock.monotonic())
            return self.config.cooldown_seconds

    # -- degraded decisions ---------------------------------------------------------

    def _share(self, spec: LimitSpec) -> LimitSpec:
        shared = self._shares.get(spec)
        if shared is None:
            share = self.config.fallback_share
            shared = LimitSpec(
                spec.strategy,
                max(1, math.floor(spec.limit * share)),
                spec.window_us,
                max(1, math.floor(spec.burst * share)),
            )
            if len(self._shares) >= 1024:
                self._shares.clear()  # specs are few; this only bounds a pathological caller
            self._shares[spec] = shared
        return shared

    def _degraded(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None
    ) -> list[RateLimitResult]:
        with self._lock:
            self.degraded += 1
        policy = self.config.policy
        if policy == "fail_open":
            return [
                UncheckedResult(True, spec.capacity, max(0, spec.capacity - cost), 0.0, 0.0)
                for _, spec in checks
            ]
        if policy == "fail_closed":
            retry_after = self._retry_after()
            raise StorageFailClosed(
                f"rate-limit storage {self.primary!r} is unavailable and on_storage_error is "
                f"fail_closed: request refused; retry in {retry_after:.1f}s",
                retry_after=retry_after,
            )
        local = [LimitCheck(key, self._share(spec)) for key, spec in checks]
        too_big = [check.spec for check in local if cost > check.spec.capacity]
        if too_big:
            # This process's share can never admit so large a request: refuse it.
            return [
                FallbackResult(False, s.capacity, 0, s.window_seconds, s.window_seconds)
                for s in (check.spec for check in local)
            ]
        return [FallbackResult(*r) for r in self.fallback.decide_sync(local, cost, now_us)]

    # -- the protocol ---------------------------------------------------------------

    def _admit(self) -> Decision:
        """The permit for one decision; while the circuit is closed, without the lock.

        A closed breaker hands every call the same permit and changes nothing doing so,
        so reading it is the whole of ``acquire`` (one attribute read is atomic).
        """
        return self._core.free or self._acquire()

    def _succeeded(self, permit: Decision) -> None:
        """Record a success, unless it cannot change what the breaker will decide.

        The breaker opens after ``failure_threshold`` failures in a row: while its
        window holds no failure in the same closed spell, one more success changes
        nothing, and the healthy path skips the lock and the bookkeeping.
        """
        core = self._core
        if core.window.failures or permit is not core.free:
            self._record(permit, None)

    def decide_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Decide through the storage, or by the policy when it fails or cools down."""
        permit = self._admit()
        if permit.permitted:
            try:
                results = self.primary.decide_sync(checks, cost, now_us)
            except ConfigurationError:
                self._release(permit)
                raise
            except Exception as exc:  # any failure of the storage takes the policy
                self._record(permit, exc)
            else:
                self._succeeded(permit)
                return results
        return self._degraded(checks, cost, now_us)

    async def decide(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Async face of :meth:`decide_sync`."""
        permit = self._admit()
        if permit.permitted:
            try:
                results = await self.primary.decide(checks, cost, now_us)
            except ConfigurationError:
                self._release(permit)
                raise
            except Exception as exc:
                self._record(permit, exc)
            except BaseException:
                # Cancelled: no outcome, but the probe slot must not stay taken.
                self._release(permit)
                raise
            else:
                self._succeeded(permit)
                return results
        return self._degraded(checks, cost, now_us)

    def _admin_permit(self, doing: str) -> Decision:
        permit = self._acquire()
        if not permit.permitted:
            raise StorageUnavailable(
                f"rate-limit storage {self.primary!r} is skipped while it cools down; "
                f"{doing} applied to the local fallback only"
            )
        return permit

    def _guarded_sync(self, doing: str, call: Callable[[], T]) -> T:
        permit = self._admin_permit(doing)
        try:
            result = call()
        except Exception as exc:
            self._record(permit, exc)
            raise
        self._record(permit, None)
        return result

    async def _guarded(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        permit = self._admin_permit(doing)
        try:
            result = await call()
        except Exception as exc:
            self._record(permit, exc)
            raise
        except BaseException:
            self._release(permit)
            raise
        self._record(permit, None)
        return result

    def reset_sync(self, key: str) -> None:
        """Reset ``key`` in the fallback and the storage (StorageUnavailable if unreachable)."""
        self.fallback.reset_sync(key)
        self._guarded_sync("reset", lambda: self.primary.reset_sync(key))

    async def reset(self, key: str) -> None:
        """Async face of :meth:`reset_sync`."""
        self.fallback.reset_sync(key)
        await self._guarded("reset", lambda: self.primary.reset(key))

    def clear_sync(self, prefix: str = "") -> int:
        """Clear ``prefix`` in the fallback and the storage; the storage's count."""
        self.fallback.clear_sync(prefix)
        return self._guarded_sync("clear", lambda: self.primary.clear_sync(prefix))

    async def clear(self, prefix: str = "") -> int:
        """Async face of :meth:`clear_sync`."""
        self.fallback.clear_sync(prefix)
        return await self._guarded("clear", lambda: self.primary.clear(prefix))

    def close_sync(self) -> None:
        self.primary.close_sync()

    async def aclose(self) -> None:
        await self.primary.aclose()

    # -- observability --------------------------------------------------------------

    def get_metrics(self) -> dict[str, Any]:
        """The circuit's state and this process's counts of errors and degraded decisions."""
        with self._lock:
            snapshot = self._core.snapshot(self.clock.monotonic())
        return {
            "backend": repr(self.primary),
            "policy": self.config.policy,
            "state": snapshot.state.value,
            "retry_after": round(snapshot.retry_after, 3),
            "errors": self.errors,
            "errors_by_type": dict(self.errors_by_type),
            "last_error": self.last_error,
            "skipped": self.skipped,
            "degraded_decisions": self.degraded,
            "fallback_keys": len(self.fallback),
        }
