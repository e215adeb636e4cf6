"""In-process storage: the pure strategies applied under a lock, bounded by an LRU cap.

Usable from threads and from asyncio (the lock is held only for arithmetic, never
across an await). A key whose state has fully reset is forgotten lazily when it is
next touched or reaches the LRU end; there are no timers or threads.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult
from sergas_guard.ratelimit.strategies import DECIDERS
from sergas_guard.storage.base import LimitCheck

__all__ = ["MemoryStorage"]

DEFAULT_MAX_KEYS = 100_000


class MemoryStorage:
    """Rate-limit state in this process's memory.

    ``max_keys`` bounds the number of keys held: past it the least recently used
    key is dropped (its client starts afresh, which errs towards admitting).
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Clock = SYSTEM_CLOCK) -> None:
        if max_keys < 1:
            raise ConfigurationError("max_keys must be at least 1", field="max_keys")
        self.max_keys = max_keys
        self.clock = clock
        self._time_us = clock.time_us  # bound once: read on every decision
        # key -> (strategy state, expires_at_us); the order is recency of use.
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryStorage(max_keys={self.max_keys}, keys={len(self._entries)})"

    @property
    def url(self) -> str:
        return "memory://"

    def decide_sync(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        now = self._time_us() if now_us is None else now_us
        with self._lock:
            if len(checks) == 1:
                # The common case, inlined: this is the hot path of every request.
                key, spec = checks[0]
                if cost > spec.capacity:
                    raise _too_costly(cost, spec)
                entries = self._entries
                entry = entries.get(key)
                state = None
                if entry is not None:
                    if entry[1] > now:
                        state = entry[0]
                        entries.move_to_end(key)
                    else:
                        del entries[key]
                new_state, result = DECIDERS[spec.strategy](state, now, cost, spec)
                if new_state is not state:
                    self._store(key, new_state, now, result)
                return [result]
            return self._decide_many(checks, cost, now)

    def _live_state(self, key: str, now: int) -> Any:
        """The key's state, or None when absent or fully reset (then it is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def _decide_many(
        self, checks: Sequence[LimitCheck], cost: int, now: int
    ) -> list[RateLimitResult]:
        decided = []
        for key, spec in checks:
            if cost > spec.capacity:
                raise _too_costly(cost, spec)
            state = self._live_state(key, now)
            new_state, result = DECIDERS[spec.strategy](state, now, cost, spec)
            decided.append((key, spec, state, new_state, result))
        if all(result.allowed for *_, result in decided):
            for key, _, state, new_state, result in decided:
                if new_state is not state:
                    self._store(key, new_state, now, result)
            return [result for *_, result in decided]
        # One limit rejected, so none consumes: limits that would have admitted
        # report what a peek sees, their state untouched.
        return [
            result if not result.allowed else DECIDERS[spec.strategy](state, now, 0, spec)[1]
            for _, spec, state, _, result in decided
        ]

    def _store(self, key: str, state: Any, now: int, result: RateLimitResult) -> None:
        entries = self._entries
        entries[key] = (state, now + math.ceil(result.reset_after * 1_000_000))
        if len(entries) > self.max_keys:
            entries.popitem(last=False)

    async def decide(
        self, checks: Sequence[LimitCheck], cost: int, now_us: int | None = None
    ) -> list[RateLimitResult]:
        return self.decide_sync(checks, cost, now_us)

    def reset_sync(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
            for stored in [k for k in self._entries if k.startswith(key)]:
                del self._entries[stored]

    async def reset(self, key: str) -> None:
        self.reset_sync(key)

    def clear_sync(self, prefix: str = "") -> int:
        with self._lock:
            doomed = [k for k in self._entries if k.startswith(prefix)]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

    async def clear(self, prefix: str = "") -> int:
        return self.clear_sync(prefix)

    def close_sync(self) -> None:
        """Nothing to release; present for the storage protocol."""

    async def aclose(self) -> None:
        """Nothing to release; present for the storage protocol."""


def _too_costly(cost: int, spec: LimitSpec) -> ConfigurationError:
    return ConfigurationError(
        f"cost {cost} exceeds what {spec.describe()} can ever admit at once ({spec.capacity})",
        field="cost",
    )
