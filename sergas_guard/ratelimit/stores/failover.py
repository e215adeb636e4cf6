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
stops sending requests to a storage that is out: it opens on *time without a reply*
or a failure *rate* over time (:mod:`sergas_guard.ratelimit.stores.outage`), never on the
concurrent failures of one burst; for ``cooldown_seconds`` every decision then takes
the policy at once (microseconds, not a timeout each), then one probe goes through and
its outcome closes or re-opens the circuit. Errors are counted in
:meth:`FailoverStorage.get_metrics` and logged once per state change, with the reason.

With ``fallback_share="auto"`` (the default) the fallback enforces ``limit // peers``
of each limit, ``peers`` being the last count of processes sharing the storage that a
heartbeat in Redis returned (:mod:`sergas_guard.ratelimit.stores.peers`).
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
from sergas_guard.ratelimit.stores.base import LimitCheck, RateLimitStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.outage import OutageDetector
from sergas_guard.ratelimit.stores.peers import HeartbeatStorage, Peers
from sergas_guard.secrets import scrub, secrets_of
from sergas_guard.validation import MAX_SECONDS

__all__ = [
    "FailoverConfig",
    "FailoverStorage",
    "FallbackResult",
    "StorageFailClosed",
    "UncheckedResult",
]

logger = logging.getLogger("sergas_guard.ratelimit.stores.failover")

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
    """What :class:`FailoverStorage` does when its storage fails (see docs/storage.md)."""

    policy: Policy = "fallback"
    #: Seconds without a successful reply, while calls fail, that open the circuit; also
    #: how long failures must span for the rate to open it (one burst's never do).
    failure_window: float = Field(default=2.0, gt=0, le=3600)
    #: Percentage of failed calls (since failures began) that opens the circuit...
    failure_rate: float = Field(default=50.0, gt=0, le=100)
    #: ...judged over at most this many seconds...
    rate_window: int = Field(default=10, ge=1, le=3600)
    #: ...once that many calls were made.
    minimum_calls: int = Field(default=20, ge=1, le=1_000_000)
    #: Consecutive failures that also open the circuit (None: only the rules above).
    #: Does not tell a burst from an outage; kept for those who want it.
    failure_threshold: int | None = Field(default=None, ge=1, le=1000)
    #: Seconds the circuit stays open before one probe is let through.
    cooldown_seconds: float = Field(default=5.0, gt=0, le=MAX_SECONDS)
    #: Part of each limit the local fallback enforces: "auto" = limit // peers from the
    #: heartbeat (storage/peers.py), or a fraction (1/N for N processes).
    fallback_share: float | Literal["auto"] = Field(default="auto")
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

    @field_validator("fallback_share", mode="before")
    @classmethod
    def _share(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= 1
            or math.isnan(value)
        ):
            raise ConfigurationError(
                f'fallback_share must be "auto" or a fraction in (0, 1], not {value!r:.80}',
                field="fallback_share",
            )
        return float(value)

    def breaker(self) -> CircuitBreakerConfig:
        """The state machine of the circuit: opened by hand (see OutageDetector), one probe.

        Outcomes are recorded in it only in half-open, where the probe's failure
        (a 100 % failure rate) re-opens it and its success closes it.
        """
        return CircuitBreakerConfig(
            window_type="count",
            window_size=1,
            minimum_calls=1,
            failure_rate_threshold=100.0,
            wait_duration_in_open=self.cooldown_seconds,
            permitted_calls_in_half_open=1,
            # A probe whose caller vanished frees its slot after this long.
            probe_timeout=max(10.0, self.cooldown_seconds),
        )

    def detector(self) -> OutageDetector:
        """The judge of outcomes while the circuit is closed."""
        return OutageDetector(
            self.failure_window,
            self.rate_window,
            self.failure_rate,
            self.minimum_calls,
            self.failure_threshold,
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
        self._monotonic = clock.monotonic
        self._core = BreakerCore("rate-limit storage", self.config.breaker(), clock.monotonic())
        self._detector = self.config.detector()
        self._lock = threading.Lock()
        #: The processes sharing the storage; None when no share depends on them (another
        #: policy, a fixed share) or the storage cannot count them.
        self.peers = (
            Peers(storage, clock)
            if self.config.policy == "fallback"
            and self.config.fallback_share == "auto"
            and isinstance(storage, HeartbeatStorage)
            else None
        )
        self._shares: dict[LimitSpec, LimitSpec] = {}
        self._shares_divisor: float = 0.0
        self.open_reason = ""
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

    def _record(self, permit: Decision, error: Exception | None, started: float) -> None:
        """Record a call's outcome: judged by the detector while closed, by the core
        when it was the half-open probe; a call admitted by an earlier state is ignored."""
        with self._lock:
            now = self._monotonic()
            if error is not None:
                self.errors += 1
                name = type(error).__name__
                self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
                self.last_error = scrub(f"{name}: {error}", *secrets_of(self.primary))
            core = self._core
            if permit.probe:
                if error is not None:
                    self.open_reason = "the probe after the cool-down failed"
                core.record(now, permit.generation, permit.probe, 0.0, error is not None)
            elif permit.generation == core.generation and core.state is CircuitState.CLOSED:
                if error is None:
                    self._detector.success(now)
                else:
                    reason = self._detector.failure(started, now)
                    if reason is not None:
                        self.open_reason = reason
                        core.transition(now, CircuitState.OPEN)
            events = core.drain_events()
            if events:
                self._detector.reset()  # each state judges afresh
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
                    "rate-limit storage %r failing: %s (last error %s); policy %s, "
                    "next try in %.1fs",
                    self.primary,
                    self.open_reason,
                    self.last_error,
                    self._policy_in_force(),
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

    def _policy_in_force(self) -> str:
        """The policy as the log states it, with the share of a fallback."""
        if self.policy != "fallback":
            return self.policy
        peers = self.peers
        if peers is None:
            share = self.config.fallback_share
            return f"fallback at {share if share != 'auto' else 1.0:g} of each limit"
        if peers.count is None:
            return "fallback at the whole limit (no peer count read yet)"
        count = peers.count
        return f"fallback at 1/{count} of each limit ({count} process{'es' if count > 1 else ''})"

    def _divisor(self) -> float:
        """What each limit is divided by: the peer count, or 1 / a fixed share."""
        share = self.config.fallback_share
        if share != "auto":
            return 1.0 / share
        peers = self.peers
        return float(peers.count or 1) if peers is not None else 1.0

    def _share(self, spec: LimitSpec) -> LimitSpec:
        divisor = self._divisor()
        if divisor != self._shares_divisor:
            self._shares = {}  # the peer count changed: every share with it
            self._shares_divisor = divisor
        shared = self._shares.get(spec)
        if shared is None:
            share = self.config.fallback_share
            if share == "auto":
                # Whole numbers: limit // peers, never a float's rounding error.
                peers = int(divisor)
                limit, burst = spec.limit // peers, spec.burst // peers
            else:
                limit, burst = math.floor(spec.limit * share), math.floor(spec.burst * share)
            shared = LimitSpec(spec.strategy, max(1, limit), spec.window_us, max(1, burst))
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

    def _succeeded(self, permit: Decision) -> Peers | None:
        """Record a success, unless it cannot change what the circuit will decide.

        While the detector remembers no failure, a success only moves the time of the
        last reply (a plain store) and the healthy path takes no lock. Returns the
        peer counter when a heartbeat is due.
        """
        now = self._monotonic()
        detector = self._detector
        if detector.watching or permit is not self._core.free:
            self._record(permit, None, now)
        else:
            detector.last_reply = now
        peers = self.peers
        if peers is not None and now >= peers.next_beat:
            return peers
        return None

    def decide_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Decide through the storage, or by the policy when it fails or cools down."""
        permit = self._admit()
        if permit.permitted:
            started = self._monotonic()
            try:
                results = self.primary.decide_sync(checks, cost, now_us)
            except ConfigurationError:
                self._release(permit)
                raise
            except Exception as exc:  # any failure of the storage takes the policy
                self._record(permit, exc, started)
            else:
                peers = self._succeeded(permit)
                if peers is not None:
                    peers.beat_sync()  # in this thread: the sync face runs no timer
                return results
        return self._degraded(checks, cost, now_us)

    async def decide(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        """Async face of :meth:`decide_sync`."""
        permit = self._admit()
        if permit.permitted:
            started = self._monotonic()
            try:
                results = await self.primary.decide(checks, cost, now_us)
            except ConfigurationError:
                self._release(permit)
                raise
            except Exception as exc:
                self._record(permit, exc, started)
            except BaseException:
                # Cancelled: no outcome, but the probe slot must not stay taken.
                self._release(permit)
                raise
            else:
                peers = self._succeeded(permit)
                if peers is not None:
                    peers.beat_soon()  # a background task: this caller does not wait
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
        started = self._monotonic()
        try:
            result = call()
        except Exception as exc:
            self._record(permit, exc, started)
            raise
        self._record(permit, None, started)
        return result

    async def _guarded(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        permit = self._admin_permit(doing)
        started = self._monotonic()
        try:
            result = await call()
        except Exception as exc:
            self._record(permit, exc, started)
            raise
        except BaseException:
            self._release(permit)
            raise
        self._record(permit, None, started)
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
        if self.peers is not None:
            await self.peers.aclose()
        await self.primary.aclose()

    # -- observability --------------------------------------------------------------

    def get_metrics(self) -> dict[str, Any]:
        """The circuit's state and this process's counts of errors and degraded decisions.

        ``open_reason`` says why the circuit last opened, ``peers`` is the last known
        number of processes sharing the storage and ``share_in_force`` the fraction of
        each limit the fallback would enforce now (before rounding down).
        """
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
            "open_reason": self.open_reason,
            "fallback_share": self.config.fallback_share,
            "peers": self.peers.count if self.peers is not None else None,
            "share_in_force": round(1.0 / self._divisor(), 6),
        }
