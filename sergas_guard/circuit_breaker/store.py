"""Where breaker state lives: this process (:class:`LocalBreakerStore`) or Redis.

A store makes each operation of :class:`~sergas_guard.circuit_breaker.core.BreakerCore`
atomic for one breaker name. Every operation returns its result and the events it
produced, which the breaker hands to listeners after the store's lock is released.
The Redis twin lives in :mod:`sergas_guard.circuit_breaker.redis_store`.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any, Protocol, runtime_checkable

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import BreakerCore, Decision, Snapshot
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError

__all__ = ["BreakerStore", "Events", "LocalBreakerStore", "store_for"]

Events = list[CircuitBreakerEvent]


@runtime_checkable
class BreakerStore(Protocol):
    """Atomic breaker operations by name, with a sync and an async face.

    Shared stores raise :class:`~sergas_guard.errors.StorageUnavailable` when they
    cannot be reached; the breaker then falls back to local state.
    """

    kind: str

    def acquire_sync(self, name: str, config: CircuitBreakerConfig) -> tuple[Decision, Events]:
        """Decide whether one call may run."""
        ...

    async def acquire(self, name: str, config: CircuitBreakerConfig) -> tuple[Decision, Events]:
        """Async face of :meth:`acquire_sync`."""
        ...

    def record_sync(
        self,
        name: str,
        config: CircuitBreakerConfig,
        decision: Decision,
        duration: float,
        failed: bool,
    ) -> Events:
        """Record the outcome of a call that ``decision`` admitted."""
        ...

    async def record(
        self,
        name: str,
        config: CircuitBreakerConfig,
        decision: Decision,
        duration: float,
        failed: bool,
    ) -> Events:
        """Async face of :meth:`record_sync`."""
        ...

    def release_sync(self, name: str, config: CircuitBreakerConfig, decision: Decision) -> Events:
        """Give back the half-open slot of a call that ended without an outcome."""
        ...

    async def release(self, name: str, config: CircuitBreakerConfig, decision: Decision) -> Events:
        """Async face of :meth:`release_sync`."""
        ...

    def transition_sync(
        self, name: str, config: CircuitBreakerConfig, target: CircuitState | None
    ) -> Events:
        """Move to ``target`` by hand; ``None`` resets the breaker to a fresh CLOSED."""
        ...

    async def transition(
        self, name: str, config: CircuitBreakerConfig, target: CircuitState | None
    ) -> Events:
        """Async face of :meth:`transition_sync`."""
        ...

    def snapshot_sync(self, name: str, config: CircuitBreakerConfig) -> tuple[Snapshot, Events]:
        """The breaker's state and numbers now."""
        ...

    async def snapshot(self, name: str, config: CircuitBreakerConfig) -> tuple[Snapshot, Events]:
        """Async face of :meth:`snapshot_sync`."""
        ...


class LocalBreakerStore:
    """Breaker state in this process: the pure core under one lock per breaker.

    The lock is held for the bookkeeping only (microseconds), never while a protected
    call runs, and never across an ``await``: the async face is the sync one.
    """

    kind = "memory"

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._cores: dict[str, tuple[BreakerCore, threading.Lock]] = {}
        self._create_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBreakerStore(breakers={len(self._cores)})"

    def slot(self, name: str, config: CircuitBreakerConfig) -> tuple[BreakerCore, threading.Lock]:
        """The core of breaker ``name`` and its lock, created on first use."""
        found = self._cores.get(name)
        if found is None:
            with self._create_lock:
                found = self._cores.get(name)
                if found is None:
                    found = (BreakerCore(name, config, self.clock.monotonic()), threading.Lock())
                    self._cores[name] = found
        return found

    def acquire_sync(self, name: str, config: CircuitBreakerConfig) -> tuple[Decision, Events]:
        core, lock = self.slot(name, config)
        with lock:
            decision = core.acquire(self.clock.monotonic())
            return decision, core.drain_events()

    async def acquire(self, name: str, config: CircuitBreakerConfig) -> tuple[Decision, Events]:
        return self.acquire_sync(name, config)

    def record_sync(
        self,
        name: str,
        config: CircuitBreakerConfig,
        decision: Decision,
        duration: float,
        failed: bool,
    ) -> Events:
        core, lock = self.slot(name, config)
        with lock:
            core.record(
                self.clock.monotonic(), decision.generation, decision.probe, duration, failed
            )
            return core.drain_events()

    async def record(
        self,
        name: str,
        config: CircuitBreakerConfig,
        decision: Decision,
        duration: float,
        failed: bool,
    ) -> Events:
        return self.record_sync(name, config, decision, duration, failed)

    def release_sync(self, name: str, config: CircuitBreakerConfig, decision: Decision) -> Events:
        core, lock = self.slot(name, config)
        with lock:
            core.release(self.clock.monotonic(), decision.generation, decision.probe)
            return core.drain_events()

    async def release(self, name: str, config: CircuitBreakerConfig, decision: Decision) -> Events:
        return self.release_sync(name, config, decision)

    def transition_sync(
        self, name: str, config: CircuitBreakerConfig, target: CircuitState | None
    ) -> Events:
        core, lock = self.slot(name, config)
        with lock:
            if target is None:
                core.reset(self.clock.monotonic())
            else:
                core.transition(self.clock.monotonic(), target)
            return core.drain_events()

    async def transition(
        self, name: str, config: CircuitBreakerConfig, target: CircuitState | None
    ) -> Events:
        return self.transition_sync(name, config, target)

    def snapshot_sync(self, name: str, config: CircuitBreakerConfig) -> tuple[Snapshot, Events]:
        core, lock = self.slot(name, config)
        with lock:
            snapshot = core.snapshot(self.clock.monotonic())
            return snapshot, core.drain_events()

    async def snapshot(self, name: str, config: CircuitBreakerConfig) -> tuple[Snapshot, Events]:
        return self.snapshot_sync(name, config)


# Breakers given the same MemoryStorage (or RedisStorage) share one breaker store.
_STORES: weakref.WeakKeyDictionary[Any, BreakerStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_for(storage: Any, clock: Clock = SYSTEM_CLOCK) -> BreakerStore:
    """The breaker store for a ``storage=`` argument.

    ``None`` gives a private in-process store on ``clock``; a
    :class:`~sergas_guard.storage.MemoryStorage` gives the in-process store shared by
    every breaker given that storage (on the storage's clock); a
    :class:`~sergas_guard.storage.RedisStorage` gives the Redis store shared by every
    process using that Redis; a :class:`BreakerStore` is used as it is. Raises
    ConfigurationError for anything else.
    """
    if storage is None:
        return LocalBreakerStore(clock)
    if isinstance(storage, BreakerStore):
        return storage
    # An instance of a storage class exists only if its module was imported, so look
    # there instead of importing the storage package (and its drivers) for nothing.
    memory = sys.modules.get("sergas_guard.storage.memory")
    redis = sys.modules.get("sergas_guard.storage.redis")
    is_memory = memory is not None and isinstance(storage, memory.MemoryStorage)
    if not is_memory and not (redis is not None and isinstance(storage, redis.RedisStorage)):
        raise ConfigurationError(
            f"storage must be a MemoryStorage, a RedisStorage or a BreakerStore, "
            f"not {type(storage).__name__}",
            field="storage",
        )
    with _STORES_LOCK:
        store = _STORES.get(storage)
        if store is None:
            if is_memory:
                store = LocalBreakerStore(storage.clock)
            else:
                from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore

                store = RedisBreakerStore(storage)
            _STORES[storage] = store
        return store
