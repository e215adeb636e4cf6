"""Breaker state in Redis, shared by every process: the core's Lua twin, one round trip per step.

Each operation runs ``lua/breaker.lua`` on the breaker's key, so a step (admit a
call, record an outcome, open, half-open...) is atomic across processes and hosts,
timed by the server's ``TIME``. Keys carry a ``{hash tag}`` (Redis Cluster) and a TTL.
Any Redis failure surfaces as :class:`~sergas_guard.errors.StorageUnavailable`, on
which the breaker falls back to its local state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import Decision, Snapshot
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState, EventKind
from sergas_guard.circuit_breaker.store import Events
from sergas_guard.circuit_breaker.window import rate
from sergas_guard.clock import Clock
from sergas_guard.errors import StorageUnavailable
from sergas_guard.secrets import scrub

if TYPE_CHECKING:
    from sergas_guard.storage.redis import RedisStorage

__all__ = ["RedisBreakerHandle", "RedisBreakerStore", "breaker_key"]

SCRIPT = resources.files("sergas_guard.circuit_breaker").joinpath("lua/breaker.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

# What the driver raises when Redis cannot answer (a cluster client's errors are not
# RedisErrors).
_UNREACHABLE = (RedisError, RedisClusterException, OSError)
_DAY = 86_400
_MAX_TTL = 30 * _DAY
_EVENT_FIELDS = 5


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


class _Reply:
    """The script's reply, parsed."""

    __slots__ = ("decision", "events", "snapshot")

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
        events: list[CircuitBreakerEvent] = []
        for at in range(12, len(raw), _EVENT_FIELDS):
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
    """Breaker state shared through a :class:`~sergas_guard.storage.RedisStorage`.

    ``clock`` replaces the server's ``TIME`` (tests only: it lets a test drive Redis
    and the local core with the same manual clock).
    """

    kind = "redis"

    def __init__(self, storage: RedisStorage, clock: Clock | None = None) -> None:
        self.storage = storage
        self.clock = clock

    def __repr__(self) -> str:
        return f"RedisBreakerStore(cluster={self.storage.is_cluster})"

    def handle(self, name: str, config: CircuitBreakerConfig) -> RedisBreakerHandle:
        return RedisBreakerHandle(self, name, config)


class RedisBreakerHandle:
    """One breaker in Redis: each operation is one EVALSHA of the Lua twin."""

    kind = "redis"

    def __init__(self, store: RedisBreakerStore, name: str, config: CircuitBreakerConfig) -> None:
        self.store = store
        self.name = name
        self.key = breaker_key(store.storage.key_prefix, name)
        self._config_args = _config_args(config)

    def _args(self, op: str, extra: Sequence[str]) -> list[str]:
        clock = self.store.clock
        return [op, "" if clock is None else repr(clock.time()), *self._config_args, *extra]

    def run_sync(self, op: str, extra: Sequence[str] = ()) -> _Reply:
        """Run one operation with the sync client; raises StorageUnavailable on any failure."""
        args = self._args(op, extra)
        try:
            client = self.store.storage.sync_client  # a cluster client connects on creation
            try:
                raw = client.evalsha(SCRIPT_SHA, 1, self.key, *args)
            except NoScriptError:
                raw = client.eval(SCRIPT, 1, self.key, *args)
        except _UNREACHABLE as error:
            raise self._unavailable(error) from error
        return _Reply(self.name, raw)

    def _unavailable(self, error: Exception) -> StorageUnavailable:
        secrets = self.store.storage.secrets()
        return StorageUnavailable(scrub(f"circuit breaker store: {error}", *secrets))

    async def run(self, op: str, extra: Sequence[str] = ()) -> _Reply:
        """Async face of :meth:`run_sync`."""
        args = self._args(op, extra)
        try:
            client = self.store.storage.client
            try:
                raw = await client.evalsha(SCRIPT_SHA, 1, self.key, *args)
            except NoScriptError:
                raw = await client.eval(SCRIPT, 1, self.key, *args)
        except _UNREACHABLE as error:
            raise self._unavailable(error) from error
        return _Reply(self.name, raw)

    # -- the BreakerHandle protocol --------------------------------------------------------

    def acquire_sync(self) -> tuple[Decision, Events]:
        reply = self.run_sync("acquire")
        return reply.decision, reply.events

    async def acquire(self) -> tuple[Decision, Events]:
        reply = await self.run("acquire")
        return reply.decision, reply.events

    def record_sync(self, decision: Decision, duration: float, failed: bool) -> Events:
        return self.run_sync("record", _outcome(decision, duration, failed)).events

    async def record(self, decision: Decision, duration: float, failed: bool) -> Events:
        return (await self.run("record", _outcome(decision, duration, failed))).events

    def release_sync(self, decision: Decision) -> Events:
        return self.run_sync("release", _outcome(decision, 0.0, False)).events

    async def release(self, decision: Decision) -> Events:
        return (await self.run("release", _outcome(decision, 0.0, False))).events

    def transition_sync(self, target: CircuitState | None) -> Events:
        return self.run_sync(*_transition(target)).events

    async def transition(self, target: CircuitState | None) -> Events:
        return (await self.run(*_transition(target))).events

    def snapshot_sync(self) -> tuple[Snapshot, Events]:
        reply = self.run_sync("snapshot")
        return reply.snapshot, reply.events

    async def snapshot(self) -> tuple[Snapshot, Events]:
        reply = await self.run("snapshot")
        return reply.snapshot, reply.events


def _outcome(decision: Decision, duration: float, failed: bool) -> list[str]:
    return [str(decision.generation), str(decision.probe), repr(duration), "1" if failed else "0"]


def _transition(target: CircuitState | None) -> tuple[str, list[str]]:
    if target is None:
        return "reset", []
    return "transition", ["0", "0", "0", "0", target.value]
