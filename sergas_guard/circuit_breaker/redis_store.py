"""Breaker state in Redis, shared by every process: the core's Lua twin, one round trip per step.

Each operation runs ``lua/breaker.lua`` on the breaker's key, so a step (admit a
call, record an outcome, open, half-open...) is atomic across processes and hosts,
timed by the server's ``TIME``. Keys carry a ``{hash tag}`` (Redis Cluster) and a TTL.
Any Redis failure surfaces as :class:`~sergas_guard.errors.StorageUnavailable`, on
which the breaker falls back to its local state.

This module is only the I/O: :class:`RedisBreakerHandle` runs one step per call.
Breakers get a :class:`~sergas_guard.circuit_breaker.shared_handle.SharedBreakerHandle`
over it, which decides what it can from the state the last reply carried (one round
trip per call in the steady state, see :mod:`~sergas_guard.circuit_breaker.shared_view`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import Decision, Snapshot
from sergas_guard.circuit_breaker.shared_handle import (
    SharedBreakerHandle,
    outcome_args,
    transition_args,
)
from sergas_guard.circuit_breaker.shared_view import StoreState
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState, EventKind
from sergas_guard.circuit_breaker.store import Events
from sergas_guard.circuit_breaker.window import rate
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import StorageError, StorageUnavailable
from sergas_guard.redis.runner import ScriptRunner
from sergas_guard.redis.scripts import Script

__all__ = ["RedisBreakerHandle", "RedisBreakerStore", "ScriptReply", "breaker_key"]

SCRIPT = Script(
    resources.files("sergas_guard.circuit_breaker").joinpath("lua/breaker.lua").read_text()
)
_DAY = 86_400
_MAX_TTL = 30 * _DAY
_EVENT_FIELDS = 5
_FIRST_EVENT = 14
# The script's op arguments are ARGV[16..20]; the caller's refusals come after them.
_OP_ARGS = 5


_DOING = "circuit breaker step"


def _unavailable(error: StorageError) -> StorageUnavailable:
    """Any failure of the store, an error reply too (an ``OOM`` refusal, say), sends the
    breaker to its local state: the protected call must not fail for the store's sake."""
    if isinstance(error, StorageUnavailable):
        return error
    return StorageUnavailable(str(error))  # already scrubbed by the storage


def breaker_key(prefix: str, name: str) -> str:
    """The Redis key of breaker ``name``; the hash tag keeps it on one cluster slot."""
    return f"{prefix}:cb:{{{name}}}"


def _ttl(config: CircuitBreakerConfig) -> int:
    """Seconds a key outlives its last use: at least a day, at least twice the longest wait."""
    longest = max(
        config.open_wait(10**6),
        config.max_wait_in_half_open,
        config.probe_timeout,
        config.window_size if config.window_type == "time" else 0,
    )
    return min(_MAX_TTL, max(_DAY, math.ceil(2 * longest)))


def _config_args(config: CircuitBreakerConfig) -> list[str]:
    cap = config.max_wait_duration_in_open
    return [
        str(_ttl(config)),
        config.window_type,
        str(config.window_size),
        str(config.minimum_calls),
        repr(config.failure_rate_threshold),
        repr(config.slow_call_duration),
        repr(config.slow_call_rate_threshold),
        repr(config.wait_duration_in_open),
        repr(config.wait_backoff_multiplier),
        "-1" if cap is None else repr(cap),
        str(config.permitted_calls_in_half_open),
        repr(config.max_wait_in_half_open),
        repr(config.probe_timeout),
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ScriptReply:
    """The script's reply, parsed."""

    __slots__ = ("decision", "events", "snapshot", "store_state")

    def __init__(self, name: str, raw: Sequence[Any]) -> None:
        state = CircuitState(_text(raw[1]))
        retry_after = float(_text(raw[4]))
        self.decision = Decision(bool(raw[0]), state, int(raw[2]), int(raw[3]), retry_after)
        calls, failed, slow = int(raw[5]), int(raw[6]), int(raw[7])
        self.snapshot = Snapshot(
            state=state,
            retry_after=retry_after,
            buffered_calls=calls,
            failed_calls=failed,
            slow_calls=slow,
            failure_rate=rate(failed, calls),
            slow_call_rate=rate(slow, calls),
            rejected_calls=int(raw[8]),
            not_permitted_calls=int(raw[9]),
            probes_in_flight=int(raw[10]),
            consecutive_opens=int(raw[11]),
        )
        open_until = _text(raw[13])
        self.store_state = StoreState(
            state, int(raw[2]), float(_text(raw[12])), float(open_until) if open_until else 0.0
        )
        events: list[CircuitBreakerEvent] = []
        for at in range(_FIRST_EVENT, len(raw), _EVENT_FIELDS):
            kind, after, source, target, value = (_text(v) for v in raw[at : at + _EVENT_FIELDS])
            events.append(
                CircuitBreakerEvent(
                    EventKind(kind),
                    name,
                    CircuitState(after),
                    CircuitState(source) if source else None,
                    CircuitState(target) if target else None,
                    float(value) if value else None,
                )
            )
        self.events: Events = events


class RedisBreakerStore:
    """Breaker state shared through a :class:`~sergas_guard.storage.RedisStorage` (any
    :class:`~sergas_guard.redis.runner.ScriptRunner`: single server, Sentinel, Cluster).

    ``clock`` replaces the server's ``TIME`` and this process's monotonic clock (tests
    only: it lets a test drive Redis and the local core with the same manual clock).
    With ``cache_state=False`` every step asks Redis, two round trips per call (the
    bare Lua twin, which the differential test compares with the Python core).
    """

    kind = "redis"

    def __init__(
        self, storage: ScriptRunner, clock: Clock | None = None, *, cache_state: bool = True
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.cache_state = cache_state

    def __repr__(self) -> str:
        return f"RedisBreakerStore(cluster={self.storage.is_cluster})"

    def handle(
        self, name: str, config: CircuitBreakerConfig
    ) -> SharedBreakerHandle | RedisBreakerHandle:
        steps = RedisBreakerHandle(self, name, config)
        if not self.cache_state:
            return steps
        # The view ages on this process's clock; a test clock stands for both clocks.
        now = SYSTEM_CLOCK.monotonic if self.clock is None else self.clock.time
        return SharedBreakerHandle(steps, name, config, now)


class RedisBreakerHandle:
    """One breaker in Redis: each operation is one EVALSHA of the Lua twin."""

    kind = "redis"

    def __init__(self, store: RedisBreakerStore, name: str, config: CircuitBreakerConfig) -> None:
        self.store = store
        self.name = name
        self.key = breaker_key(store.storage.key_prefix, name)
        self._config_args = _config_args(config)

    def _args(self, op: str, extra: Sequence[str], refused: int) -> list[str]:
        clock = self.store.clock
        args = [op, "" if clock is None else repr(clock.time()), *self._config_args, *extra]
        if refused:
            args += [""] * (_OP_ARGS - len(extra))
            args.append(str(refused))
        return args

    def run_sync(self, op: str, extra: Sequence[str] = (), refused: int = 0) -> ScriptReply:
        """Run one operation from a thread; raises StorageUnavailable on any failure.

        ``refused`` calls this process refused on its own are added to the shared count.
        """
        args = self._args(op, extra, refused)
        try:
            raw = self.store.storage.run_script_sync(SCRIPT, [self.key], args, _DOING)
        except StorageError as error:
            raise _unavailable(error) from error
        return ScriptReply(self.name, raw)

    async def run(self, op: str, extra: Sequence[str] = (), refused: int = 0) -> ScriptReply:
        """Async face of :meth:`run_sync`."""
        args = self._args(op, extra, refused)
        try:
            raw = await self.store.storage.run_script(SCRIPT, [self.key], args, _DOING)
        except StorageError as error:
            raise _unavailable(error) from error
        return ScriptReply(self.name, raw)

    # -- the BreakerHandle protocol --------------------------------------------------------

    def acquire_sync(self) -> tuple[Decision, Events]:
        reply = self.run_sync("acquire")
        return reply.decision, reply.events

    async def acquire(self) -> tuple[Decision, Events]:
        reply = await self.run("acquire")
        return reply.decision, reply.events

    def record_sync(self, decision: Decision, duration: float, failed: bool) -> Events:
        return self.run_sync("record", outcome_args(decision, duration, failed)).events

    async def record(self, decision: Decision, duration: float, failed: bool) -> Events:
        return (await self.run("record", outcome_args(decision, duration, failed))).events

    def release_sync(self, decision: Decision) -> Events:
        return self.run_sync("release", outcome_args(decision, 0.0, False)).events

    async def release(self, decision: Decision) -> Events:
        return (await self.run("release", outcome_args(decision, 0.0, False))).events

    def transition_sync(self, target: CircuitState | None) -> Events:
        return self.run_sync(*transition_args(target)).events

    async def transition(self, target: CircuitState | None) -> Events:
        return (await self.run(*transition_args(target))).events

    def snapshot_sync(self) -> tuple[Snapshot, Events]:
        reply = self.run_sync("snapshot")
        return reply.snapshot, reply.events

    async def snapshot(self) -> tuple[Snapshot, Events]:
        reply = await self.run("snapshot")
        return reply.snapshot, reply.events
