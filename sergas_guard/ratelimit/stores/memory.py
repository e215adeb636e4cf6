"""In-process storage: the pure strategies applied under a lock, bounded by an LRU cap.

Usable from threads and from asyncio (the lock is held only for arithmetic, never
across an await). A key whose state has fully reset is forgotten lazily when it is
next touched or reaches the LRU end; there are no timers or threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from sergas_guard.clock import SYSTEM_CLOCK, Clock, SystemClock
from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    RateLimitStrategy,
    new_result,
)
from sergas_guard.ratelimit.stores.base import LimitCheck, too_costly
from sergas_guard.ratelimit.strategies import DECIDERS, Decider, sliding_log
from sergas_guard.validation import whole

__all__ = ["MemoryStorage"]

DEFAULT_MAX_KEYS = 100_000
_ceil = math.ceil

#: From this limit up, a sliding log is kept as a deque updated in place (under the
#: lock) rather than the tuple the pure function copies whole on every admission.
#: Below it the copy is cheap and the tuple far smaller (a deque takes ~600 bytes
#: however short, which a cap of 100,000 keys would multiply).
MUTABLE_LOG_FROM = 64


_LOG = RateLimitStrategy.SLIDING_LOG


def _log_in_place(spec: LimitSpec) -> bool:
    """Whether this storage keeps the state of ``spec`` as a deque updated in place."""
    return spec.strategy is _LOG and spec.limit >= MUTABLE_LOG_FROM


def _log_decider(state: Any, now: int, cost: int, spec: LimitSpec) -> tuple[Any, RateLimitResult]:
    if _log_in_place(spec):
        return sliding_log.decide_in_place(state, now, cost, spec)
    return sliding_log.decide(state, now, cost, spec)


_SINGLE_DECIDERS: dict[RateLimitStrategy, Decider] = {
    **DECIDERS,
    _LOG: _log_decider,
}


class MemoryStorage:
    """Rate-limit state in this process's memory.

    ``max_keys`` bounds the number of keys held: past it the least recently used
    key is dropped (its client starts afresh, which errs towards admitting).
    Raises ConfigurationError unless ``max_keys`` is a whole number of at least 1.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_keys = whole(max_keys, "max_keys", minimum=1)
        self.clock = clock
        self._time_us = clock.time_us  # bound once: read on every decision
        self._time_ns = time.time_ns if type(clock) is SystemClock else None
        # key -> (strategy state, expires_at_us, rejection memo or None); the order
        # is recency of use.
        self._entries: OrderedDict[str, tuple[Any, int, _Memo | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release

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
        if now_us is not None:
            now = now_us
        elif self._time_ns is not None:
            now = self._time_ns() // 1000  # SystemClock.time_us without its Python frame
        else:
            now = self._time_us()
        if len(checks) != 1:
            with self._lock:
                return self._decide_many(checks, cost, now)
        # One limit, inlined: this is the hot path of every request.
        key, spec = checks[0]
        if cost > spec.capacity:
            raise too_costly(cost, spec)
        entries = self._entries
        # acquire/release rather than ``with``: half the cost, and nothing between
        # them can raise except a strategy bug, which the finally still covers.
        self._acquire()
        try:
            entry = entries.get(key)
            state = None
            if entry is not None:
                if entry[1] > now:
                    entries.move_to_end(key)
                    memo = entry[2]
                    if memo is not None and cost < 2 and memo[0] <= now < memo[1]:
                        return [
                            new_result(
                                (
                                    False,
                                    memo[2],
                                    0,
                                    (memo[1] - now) / US_PER_SECOND,
                                    (memo[3] - now) / US_PER_SECOND,
                                )
                            )
                        ]
                    state = entry[0]
                else:
                    del entries[key]
            new_state, result = _SINGLE_DECIDERS[spec.strategy](state, now, cost, spec)
            if result[0]:
                if cost:  # the state changed (in place, for the log): store it afresh
                    entries[key] = (new_state, now + _ceil(result[4] * 1e6), None)
                    if state is None and len(entries) > self.max_keys:  # only a new key grows
                        entries.popitem(last=False)
            elif state is not None and cost < 2 and not result[2]:
                entries[key] = (state, entry[1], _rejection_memo(now, result))  # type: ignore[index]
            return [result]
        finally:
            self._release()

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
                raise too_costly(cost, spec)
            state = self._live_state(key, now)
            if type(state) is deque:
                # Nothing may change before every limit has admitted: decide on a copy.
                state = tuple(state)
            new_state, result = DECIDERS[spec.strategy](state, now, cost, spec)
            decided.append((key, spec, state, new_state, result))
        if all(result.allowed for *_, result in decided):
            for key, spec, state, new_state, result in decided:
                if new_state is not state:
                    if _log_in_place(spec):
                        new_state = deque(new_state)
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
        entries[key] = (state, now + math.ceil(result.reset_after * 1e6), None)
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


# A rejection of cost 1 (or a peek) holds, unchanged but for the clock, until the
# moment it names: (since_us, admit_at_us, limit, reset_at_us). Every strategy's
# rejection of one unit reports remaining 0, a wait to a fixed instant and a reset
# to a fixed instant, and its state does not move while it rejects; so a key under
# constant rejection (a client hammering, the case that most needs to be cheap) is
# answered from the memo without the strategy's arithmetic. Any stored state
# change replaces the entry and with it the memo.
_Memo = tuple[int, int, int, int]


def _rejection_memo(now: int, result: RateLimitResult) -> _Memo:
    return (
        now,
        now + round(result.retry_after * US_PER_SECOND),
        result.limit,
        now + round(result.reset_after * US_PER_SECOND),
    )
