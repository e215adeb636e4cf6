"""The circuit breaker users hold: a thin edge over a store and the pure core.

The breaker asks its store for a permit, runs the protected call with no lock held,
then reports the outcome. The sync and async faces differ only in whether they
await the store. When a shared store cannot be reached the breaker keeps going on
local state for ``config.storage_retry_interval`` seconds and says so in its metrics.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from types import CoroutineType, TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from sergas_guard import validation
from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import Decision, Snapshot
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState
from sergas_guard.circuit_breaker.store import (
    NO_EVENTS,
    BreakerHandle,
    Events,
    LocalBreakerHandle,
    LocalBreakerStore,
    store_for,
)
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import CircuitOpenError, ConfigurationError, StorageUnavailable

__all__ = ["CircuitBreaker", "Listener"]

P = ParamSpec("P")
R = TypeVar("R")

Listener = Callable[[CircuitBreakerEvent], object]

logger = logging.getLogger(__name__)

# Calls entered with ``with breaker:`` in this thread or task, innermost last:
# (breaker, store that admitted the call, its decision, start time).
_Entered = tuple["CircuitBreaker", BreakerHandle, Decision, float]
_ENTERED: contextvars.ContextVar[tuple[_Entered, ...]] = contextvars.ContextVar(
    "sergas_guard_circuit_breaker_entered", default=()
)


class CircuitBreaker:
    """A resilience4j-style circuit breaker for sync and async code.

    Use it as ``await breaker.call(fn, ...)``, ``breaker.call_sync(fn, ...)``, a
    decorator (``@breaker``), or a context manager (``with`` / ``async with``). A
    refused call raises :class:`~sergas_guard.errors.CircuitOpenError`.

    ``storage`` is None (state private to this object), a ``MemoryStorage`` (shared
    by breakers of the same name in this process), a ``RedisStorage`` (shared by
    every process using that Redis; every process must give the name the same
    config), or a storage URL. ``clock`` times calls and drives local state.
    """

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        storage: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: tuple[Listener, ...] = (),
    ) -> None:
        self.name = validation.name(name, "name")
        if config is not None and not isinstance(config, CircuitBreakerConfig):
            raise ConfigurationError(
                f"config must be a CircuitBreakerConfig, not {config!r:.80}", field="config"
            )
        for listener in listeners:
            validation.callable_or_none(listener, "listeners")
        self.config = config if config is not None else CircuitBreakerConfig()
        self.clock = clock
        store = store_for(storage, clock)
        # Local state runs the breaker alone, or stands in while a shared store is down.
        self._shared: BreakerHandle | None = None
        if isinstance(store, LocalBreakerStore):
            self._local: LocalBreakerHandle = store.handle(name, self.config)
        else:
            self._shared = store.handle(name, self.config)
            self._local = LocalBreakerStore(clock).handle(name, self.config)
        # Local state on our own clock (the usual case): a call admitted by the core's
        # free pass skips the store's interface, and the clock read that ends a call's
        # timing also dates its outcome.
        self._core = (
            self._local.core if self._shared is None and self._local.clock is clock else None
        )
        self._now = clock.monotonic
        self._record_result = self.config.record_result
        self._listeners: list[Listener] = list(listeners)
        self._fallback_until = 0.0
        self._storage_errors = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # No state here: reading it may cost a round trip to a shared store.
        return f"CircuitBreaker({self.name!r}, storage={(self._shared or self._local).kind})"

    # -- state and metrics -------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (time-driven transitions applied)."""
        return self._snapshot_sync().state

    async def get_state(self) -> CircuitState:
        """Async face of :attr:`state` (does not block the loop on a shared store)."""
        return (await self._snapshot()).state

    def get_metrics(self) -> dict[str, Any]:
        """State, rates and counts of this breaker, and whether it runs on local fallback.

        ``buffered_calls``/``failed_calls``/``slow_calls`` describe the window (or the
        half-open probes so far); ``rejected_calls`` counts calls refused while open,
        ``not_permitted_calls`` those refused in half-open because every probe slot
        was taken.
        """
        return self._metrics(self._snapshot_sync())

    async def get_metrics_async(self) -> dict[str, Any]:
        """Async face of :meth:`get_metrics` (does not block the loop on a shared store)."""
        return self._metrics(await self._snapshot())

    def _metrics(self, snapshot: Snapshot) -> dict[str, Any]:
        config = self.config
        return {
            "name": self.name,
            "state": snapshot.state.value,
            "failure_rate": snapshot.failure_rate,
            "slow_call_rate": snapshot.slow_call_rate,
            "buffered_calls": snapshot.buffered_calls,
            "failed_calls": snapshot.failed_calls,
            "slow_calls": snapshot.slow_calls,
            "successful_calls": snapshot.buffered_calls - snapshot.failed_calls,
            "rejected_calls": snapshot.rejected_calls,
            "not_permitted_calls": snapshot.not_permitted_calls,
            "probes_in_flight": snapshot.probes_in_flight,
            "consecutive_opens": snapshot.consecutive_opens,
            "retry_after": snapshot.retry_after,
            "failure_rate_threshold": config.failure_rate_threshold,
            "slow_call_rate_threshold": config.slow_call_rate_threshold,
            "window_type": config.window_type,
            "window_size": config.window_size,
            "storage": (self._shared or self._local).kind,
            "storage_fallback": self._in_fallback(),
            "storage_errors": self._storage_errors,
        }

    # -- manual control ----------------------------------------------------------------

    def transition_to_closed(self) -> None:
        """Close the breaker by hand (its window starts empty)."""
        self._transition_sync(CircuitState.CLOSED)

    def transition_to_open(self) -> None:
        """Open the breaker by hand; it half-opens after its wait, as if it had tripped."""
        self._transition_sync(CircuitState.OPEN)

    def transition_to_half_open(self) -> None:
        """Let the configured number of probes through now."""
        self._transition_sync(CircuitState.HALF_OPEN)

    def transition_to_forced_open(self) -> None:
        """Refuse every call until another manual transition."""
        self._transition_sync(CircuitState.FORCED_OPEN)

    def transition_to_disabled(self) -> None:
        """Let every call through and record nothing until another manual transition."""
        self._transition_sync(CircuitState.DISABLED)

    def transition_to_metrics_only(self) -> None:
        """Let every call through, keep recording and reporting, never open."""
        self._transition_sync(CircuitState.METRICS_ONLY)

    def reset(self) -> None:
        """Back to a fresh CLOSED breaker: empty window, counters and backoff at zero."""
        self._transition_sync(None)

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event; its exceptions are logged, not raised."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error when it was not registered)."""
        with self._lock:
            self._listeners = [known for known in self._listeners if known != listener]

    def _publish(self, events: Events) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("circuit breaker listener %r failed on %s", listener, event)

    # -- protected calls ---------------------------------------------------------------

    @overload
    async def call(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def call(self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run ``fn`` (sync or async) through the breaker and return its result.

        Raises CircuitOpenError when refused; otherwise whatever ``fn`` raises.
        """
        core = self._core
        decision = None if core is None else core.free  # no lock: see BreakerCore.free_pass
        store: BreakerHandle = self._local
        if decision is None:
            # Local state does no I/O, so it is reached without creating a coroutine.
            local = self._shared is None
            store, decision = self._acquire_sync() if local else await self._acquire()
        start = self._now()
        try:
            result = fn(*args, **kwargs)
            if type(result) is CoroutineType or inspect.isawaitable(result):
                result = await result
        except BaseException as error:
            await self._settle(store, decision, start, self._classify_error(error))
            raise
        failed = self._record_result is not None and self._classify_result(store, decision, result)
        if store is self._local:
            self._settle_sync(store, decision, start, failed)
        else:
            await self._settle(store, decision, start, failed)
        return result

    def call_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the sync ``fn`` through the breaker; raises CircuitOpenError when refused."""
        core = self._core
        decision = None if core is None else core.free  # no lock: see BreakerCore.free_pass
        store: BreakerHandle = self._local
        if decision is None:
            store, decision = self._acquire_sync()
        start = self._now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._settle_sync(store, decision, start, self._classify_error(error))
            raise
        failed = self._record_result is not None and self._classify_result(store, decision, result)
        self._settle_sync(store, decision, start, failed)
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async); the wrapper keeps its signature."""
        if inspect.iscoroutinefunction(fn):
            coroutine_fn = cast(Callable[P, Awaitable[Any]], fn)
            core, local, now, settle = self._core, self._local, self._now, self._settle_sync

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                # The free pass of local state is taken here: awaiting self.call()
                # would cost a second coroutine on every call.
                decision = None if core is None else core.free
                if decision is None:
                    return await self.call(coroutine_fn, *args, **kwargs)
                start = now()
                try:
                    result = await coroutine_fn(*args, **kwargs)
                except BaseException as error:
                    settle(local, decision, start, self._classify_error(error))
                    raise
                failed = self._record_result is not None and self._classify_result(
                    local, decision, result
                )
                settle(local, decision, start, failed)
                return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call_sync(fn, *args, **kwargs)

        return sync_wrapper

    def __enter__(self) -> CircuitBreaker:
        store, decision = self._acquire_sync()
        _ENTERED.set((*_ENTERED.get(), (self, store, decision, self._now())))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        store, decision, start = self._leave()
        failed = None if exc is None else self._classify_error(exc)
        self._settle_sync(store, decision, start, False if exc is None else failed)

    async def __aenter__(self) -> CircuitBreaker:
        store, decision = await self._acquire()
        _ENTERED.set((*_ENTERED.get(), (self, store, decision, self._now())))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        store, decision, start = self._leave()
        failed = None if exc is None else self._classify_error(exc)
        await self._settle(store, decision, start, False if exc is None else failed)

    def _leave(self) -> tuple[BreakerHandle, Decision, float]:
        entered = _ENTERED.get()
        for index in range(len(entered) - 1, -1, -1):
            if entered[index][0] is self:
                _ENTERED.set(entered[:index] + entered[index + 1 :])
                _, store, decision, start = entered[index]
                return store, decision, start
        raise RuntimeError(f"circuit breaker {self.name!r} exited without being entered")

    # -- outcome classification ----------------------------------------------------------

    def _classify_error(self, error: BaseException) -> bool | None:
        """True = failure, False = success, None = no outcome (slot given back)."""
        return self.config.counts_as_failure(error)

    def _classify_result(self, store: BreakerHandle, decision: Decision, result: object) -> bool:
        predicate = self.config.record_result
        if predicate is None:
            return False
        try:
            return bool(predicate(result))
        except BaseException:
            # A broken predicate must not leak the probe slot of the call it judged.
            self._settle_sync(store, decision, self._now(), None)
            raise

    # -- store access with fallback ------------------------------------------------------

    def _in_fallback(self) -> bool:
        return self._shared is not None and self.clock.monotonic() < self._fallback_until

    def _store(self) -> BreakerHandle:
        shared = self._shared
        if shared is None or self.clock.monotonic() < self._fallback_until:
            return self._local
        return shared

    def _fall_back(self, error: StorageUnavailable) -> None:
        with self._lock:
            self._storage_errors += 1
            self._fallback_until = self.clock.monotonic() + self.config.storage_retry_interval
        logger.warning(
            "circuit breaker %r: shared store unreachable (%s); using local state for %.1fs",
            self.name,
            error,
            self.config.storage_retry_interval,
        )

    def _refuse(self, decision: Decision) -> CircuitOpenError:
        return CircuitOpenError(
            self.name, retry_after=decision.retry_after, state=decision.state.value
        )

    def _acquire_sync(self) -> tuple[BreakerHandle, Decision]:
        store: BreakerHandle = self._local if self._shared is None else self._store()
        try:
            decision, events = store.acquire_sync()
        except StorageUnavailable as error:
            self._fall_back(error)
            store = self._local
            decision, events = store.acquire_sync()
        if events:
            self._publish(events)
        if not decision.permitted:
            raise self._refuse(decision)
        return store, decision

    async def _acquire(self) -> tuple[BreakerHandle, Decision]:
        if self._shared is None:
            return self._acquire_sync()  # local state does no I/O: no coroutine to await
        store = self._store()
        try:
            decision, events = await store.acquire()
        except StorageUnavailable as error:
            self._fall_back(error)
            store = self._local
            decision, events = store.acquire_sync()
        if events:
            self._publish(events)
        if not decision.permitted:
            raise self._refuse(decision)
        return store, decision

    def _settle_sync(
        self, store: BreakerHandle, decision: Decision, start: float, failed: bool | None
    ) -> None:
        end = self._now()
        core = self._core
        events: Events
        if core is not None and failed is not None and store is self._local:
            # The closed path of local state on our clock: recorded here, without the
            # store's interface, and ``end`` both times the call and dates its outcome.
            # acquire/release rather than ``with``, which costs twice as much.
            lock = self._local.lock
            lock.acquire()
            try:
                core.record(end, decision.generation, decision.probe, end - start, failed)
                events = core.events
                if events:
                    core.events = []
            finally:
                lock.release()
        else:
            try:
                if failed is None:
                    events = store.release_sync(decision)
                else:
                    events = store.record_sync(decision, end - start, failed)
            except StorageUnavailable as error:
                self._fall_back(error)
                events = self._record_locally(end - start, failed)
        if events:
            self._publish(events)

    async def _settle(
        self, store: BreakerHandle, decision: Decision, start: float, failed: bool | None
    ) -> None:
        if store is self._local:
            self._settle_sync(store, decision, start, failed)
            return
        duration = self.clock.monotonic() - start
        try:
            if failed is None:
                events = await store.release(decision)
            else:
                events = await store.record(decision, duration, failed)
        except StorageUnavailable as error:
            self._fall_back(error)
            events = self._record_locally(duration, failed)
        if events:
            self._publish(events)

    def _record_locally(self, duration: float, failed: bool | None) -> Events:
        """Record in local state the outcome the shared store could not take.

        A call admitted from the shared state's cached view is often the one that meets
        the outage (at its outcome); its outcome starts the local state's window, so the
        local breaker judges the outage from its first call. Local state takes it only
        while it admits every call: a probe slot or a generation of the shared store
        means nothing there.
        """
        admitted = self._local.core.free
        if admitted is None or failed is None:
            return NO_EVENTS
        return self._local.record_sync(admitted, duration, failed)

    def _snapshot_sync(self) -> Snapshot:
        store = self._store()
        try:
            snapshot, events = store.snapshot_sync()
        except StorageUnavailable as error:
            self._fall_back(error)
            snapshot, events = self._local.snapshot_sync()
        self._publish(events)
        return snapshot

    async def _snapshot(self) -> Snapshot:
        store = self._store()
        try:
            snapshot, events = await store.snapshot()
        except StorageUnavailable as error:
            self._fall_back(error)
            snapshot, events = self._local.snapshot_sync()
        self._publish(events)
        return snapshot

    def _transition_sync(self, target: CircuitState | None) -> None:
        store = self._store()
        try:
            events = store.transition_sync(target)
        except StorageUnavailable as error:
            self._fall_back(error)
            events = self._local.transition_sync(target)
        self._publish(events)
