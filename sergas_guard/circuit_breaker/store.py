"""Where breaker state lives: this process (:class:`LocalBreakerStore`) or Redis.

A store hands out a :class:`BreakerHandle` per breaker name, which makes each
operation of :class:`~sergas_guard.circuit_breaker.core.BreakerCore` atomic. Every
operation returns its result and the events it produced, which the breaker hands to
listeners after the store's lock is released.
The Redis twin lives in :mod:`sergas_guard.circuit_breaker.redis_store`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import BreakerCore, Decision, Snapshot
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError
from sergas_guard.redis.runner import ScriptRunner

__all__ = [
    "NO_EVENTS",
    "BreakerHandle",
    "BreakerStore",
    "Events",
    "LocalBreakerHandle",
    "LocalBreakerStore",
    "store_for",
]

Events = Sequence[CircuitBreakerEvent]
NO_EVENTS: Events = ()


@runtime_checkable
class BreakerHandle(Protocol):
    """Atomic operations on one breaker of a store, with a sync and an async face.

    Shared stores raise :class:`~sergas_guard.errors.StorageUnavailable` when they
    cannot be reached; the breaker then falls back to local state.
    """

    kind: str

    def acquire_sync(self) -> tuple[Decision, Events]:
        """Decide whether one call may run."""
        ...

    async def acquire(self) -> tuple[Decision, Events]:
        """Async face of :meth:`acquire_sync`."""
        ...

    def record_sync(self, decision: Decision, duration: float, failed: bool) -> Events:
        """Record the outcome of a call that ``decision`` admitted."""
        ...

    async def record(self, decision: Decision, duration: float, failed: bool) -> Events:
        """Async face of :meth:`record_sync`."""
        ...

    def release_sync(self, decision: Decision) -> Events:
        """Give back the half-open slot of a call that ended without an outcome."""
        ...

    async def release(self, decision: Decision) -> Events:
        """Async face of :meth:`release_sync`."""
        ...

    def transition_sync(self, target: CircuitState | None) -> Events:
        """Move to ``target`` by hand; ``None`` resets the breaker to a fresh CLOSED."""
        ...

    async def transition(self, target: CircuitState | None) -> Events:
        """Async face of :meth:`transition_sync`."""
        ...

    def snapshot_sync(self) -> tuple[Snapshot, Events]:
        """The breaker's state and numbers now."""
        ...

    async def snapshot(self) -> tuple[Snapshot, Events]:
        """Async face of :meth:`snapshot_sync`."""
        ...


@runtime_checkable
class BreakerStore(Protocol):
    """Holds the state of breakers by name."""

    kind: str

    def handle(self, name: str, config: CircuitBreakerConfig) -> BreakerHandle:
        """The operations on breaker ``name`` (created with ``config`` on first use)."""
        ...


class LocalBreakerHandle:
    """One breaker in this process: its pure core under its own lock.

    The lock is held for the bookkeeping only (microseconds), never while a protected
    call runs, and never across an ``await``: the async face is the sync one.
    """

    kind = "memory"
    __slots__ = ("_now", "clock", "core", "lock")

    def __init__(self, core: BreakerCore, lock: threading.Lock, clock: Clock) -> None:
        self.core = core
        self.lock = lock
        self.clock = clock
        self._now = clock.monotonic

    def _events(self) -> Events:
        """Take the core's pending events (call with the lock held)."""
        core = self.core
        events = core.events
        if not events:
            return NO_EVENTS
        core.events = []
        return events

    def acquire_sync(self) -> tuple[Decision, Events]:
        core = self.core
        admitted = core.free
        if admitted is not None:
            return admitted, NO_EVENTS
        with self.lock:
            decision = core.acquire(self._now())
            if not core.events:  # the usual case, without a call to _events()
                return decision, NO_EVENTS
            return decision, self._events()

    async def acquire(self) -> tuple[Decision, Events]:
        return self.acquire_sync()

    def record_sync(self, decision: Decision, duration: float, failed: bool) -> Events:
        core = self.core
        with self.lock:
            core.record(self._now(), decision.generation, decision.probe, duration, failed)
            return self._events() if core.events else NO_EVENTS

    async def record(self, decision: Decision, duration: float, failed: bool) -> Events:
        return self.record_sync(decision, duration, failed)

    def release_sync(self, decision: Decision) -> Events:
        with self.lock:
            self.core.release(self._now(), decision.generation, decision.probe)
            return self._events()

    async def release(self, decision: Decision) -> Events:
        return self.release_sync(decision)

    def transition_sync(self, target: CircuitState | None) -> Events:
        with self.lock:
            if target is None:
                self.core.reset(self._now())
            else:
                self.core.transition(self._now(), target)
            return self._events()

    async def transition(self, target: CircuitState | None) -> Events:
        return self.transition_sync(target)

    def snapshot_sync(self) -> tuple[Snapshot, Events]:
        with self.lock:
            return self.core.snapshot(self._now()), self._events()

    async def snapshot(self) -> tuple[Snapshot, Events]:
        return self.snapshot_sync()


class LocalBreakerStore:
    """Breaker state in this process, one core per name (the first config given wins)."""

    kind = "memory"

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._slots: dict[str, tuple[BreakerCore, threading.Lock]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBreakerStore(breakers={len(self._slots)})"

    def handle(self, name: str, config: CircuitBreakerConfig) -> LocalBreakerHandle:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                slot = (BreakerCore(name, config, self.clock.monotonic()), threading.Lock())
                self._slots[name] = slot
        return LocalBreakerHandle(*slot, self.clock)


# Breakers given the same MemoryStorage share one breaker store (which must not refer
# to the storage, or the weak key would never die).
_STORES: weakref.WeakKeyDictionary[Any, LocalBreakerStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


@runtime_checkable
class _Guarding(Protocol):
    """A storage that guards another (FailoverStorage): the breaker uses the guarded one."""

    primary: Any


@runtime_checkable
class _InProcess(Protocol):
    """A storage holding its state in this process (MemoryStorage), on its clock."""

    clock: Clock
    max_keys: int


def store_for(storage: Any, clock: Clock = SYSTEM_CLOCK) -> BreakerStore:
    """The breaker store for a ``storage=`` argument.

    ``None`` gives a private in-process store on ``clock``; a
    :class:`~sergas_guard.storage.MemoryStorage` gives the in-process store shared by
    every breaker given that storage (on the storage's clock); a
    :class:`~sergas_guard.storage.RedisStorage` (any
    :class:`~sergas_guard.redis.runner.ScriptRunner`) gives the Redis store shared by
    every process using that Redis (a ``FailoverStorage`` counts as the storage it
    guards, since the breaker has its own fallback); a URL gives a private in-process
    store (``"memory://"``) or the Redis store of a
    :class:`~sergas_guard.redis.backend.ScriptBackend` of it (``"redis://..."``,
    ``"redis+sentinel://..."``, ...); a :class:`BreakerStore` is used as it is.
    Raises ConfigurationError for anything else.
    """
    if storage is None:
        return LocalBreakerStore(clock)
    if isinstance(storage, str):
        return _store_for_url(storage, clock)
    if isinstance(storage, BreakerStore):
        return storage
    if isinstance(storage, _Guarding):
        storage = storage.primary  # the breaker brings its own fallback to local state
    if isinstance(storage, ScriptRunner):
        from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore

        return RedisBreakerStore(storage)  # its state is in Redis; each handle keeps a view
    if not isinstance(storage, _InProcess):
        raise ConfigurationError(
            f"storage must be a MemoryStorage, a RedisStorage or a BreakerStore, "
            f"not {type(storage).__name__}",
            field="storage",
        )
    with _STORES_LOCK:
        store = _STORES.get(storage)
        if store is None:
            store = _STORES[storage] = LocalBreakerStore(storage.clock)
        return store


def _store_for_url(url: str, clock: Clock) -> BreakerStore:
    if url.split("://", 1)[0].lower() == "memory" and "://" in url:
        return LocalBreakerStore(clock)  # a new memory storage: nobody else shares it
    from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
    from sergas_guard.redis.backend import ScriptBackend

    try:
        return RedisBreakerStore(ScriptBackend(url))
    except ConfigurationError as error:
        raise ConfigurationError(str(error), field="storage") from None
