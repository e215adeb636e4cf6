"""Async Redis decisions leave nothing for the garbage collector, on every path.

An object freed by its reference count costs nothing later; one caught in a reference
cycle (an exception whose traceback holds a frame whose locals hold the exception) waits
for a collection, and under load such leftovers are promoted to the old generation and
make the slow full collections come often: the latency outliers of a loaded server.
Each test runs decisions against a real redis-server with the collector disabled, then
counts what is left of the objects a decision creates (exceptions, tracebacks, frames,
coroutines, futures, timer handles, our results): everything must already be gone.
And a connection opened while serving a request must not keep that request's context
variables alive for the connection's life.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import gc
import types
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis

from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.failover import FailoverStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

SPEC = LimitSpec(RateLimitStrategy.SLIDING_WINDOW, 1_000_000, 60_000_000, 1_000_000)
CHECKS = [LimitCheck("sg:garbage:{client}:sw", SPEC)]
CONCURRENT = 32


def _watched(obj: object) -> str | None:
    """The kind of ``obj`` if a decision creates objects of that kind, else None.

    Asks the object's real type, never ``isinstance``: that reads ``__class__``, which
    lazy proxies among the collector's objects (Django's settings-backed ones, once a
    Django test has run) answer by configuring themselves.
    """
    kind = type(obj)
    if issubclass(kind, BaseException):
        return kind.__name__
    if issubclass(kind, types.TracebackType | types.FrameType | types.CoroutineType):
        return kind.__name__
    if issubclass(kind, asyncio.Handle) and obj.cancelled():  # type: ignore[attr-defined]
        return None  # an empty shell the loop drops when its time comes
    if issubclass(kind, asyncio.Future | asyncio.Handle | RateLimitResult | LimitCheck):
        return kind.__name__
    return None


def _census() -> collections.Counter[str]:
    kinds = (_watched(obj) for obj in gc.get_objects())
    return collections.Counter(kind for kind in kinds if kind is not None)


@pytest.fixture
def no_collector() -> Iterator[None]:
    with warnings.catch_warnings():
        # Sockets an earlier test left to the collector are not this test's business.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _left_behind(run: Callable[[], Awaitable[None]]) -> dict[str, int]:
    """What ``run`` leaves alive (with the collector off), by kind."""
    before = _census()
    await run()
    # Leave the loop step that resumed us (its handle still holds the gather's future),
    # and let closed transports finish closing.
    for _ in range(3):
        await asyncio.sleep(0)
    return dict(_census() - before)


async def _burst(storage: RedisStorage | FailoverStorage) -> None:
    async def one() -> None:
        results = await storage.decide(CHECKS, 1)
        assert results[0].allowed

    await asyncio.gather(*(one() for _ in range(CONCURRENT)))


async def test_a_burst_of_decisions_leaves_nothing(redis_url: str, no_collector: None) -> None:
    # A fixed share: with "auto", a heartbeat task may be in flight (alive, not garbage)
    # when the census is taken; test_peers.py covers the heartbeat.
    storage = FailoverStorage(
        RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0), fallback_share=0.5
    )
    await _burst(storage)  # connections opened, script cached
    for _ in range(3):
        assert await _left_behind(lambda: _burst(storage)) == {}
    await storage.aclose()


async def test_a_flushed_script_cache_leaves_nothing(redis_url: str, no_collector: None) -> None:
    # After SCRIPT FLUSH each connection's next decision meets NOSCRIPT and resends with
    # EVAL; an error reply raised as an exception would leave error, traceback and frames
    # behind. The connections are closed at the end, so that everything the burst made
    # must be gone.
    storage = FailoverStorage(RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0))
    await _burst(storage)  # connections open, the script loaded by their handshakes
    flusher = redis.Redis.from_url(redis_url)
    flusher.script_flush()
    flusher.config_resetstat()

    async def burst_then_close() -> None:
        await _burst(storage)
        await storage.aclose()

    assert await _left_behind(burst_then_close) == {}
    assert flusher.info("commandstats")["cmdstat_eval"]["calls"] >= 1  # NOSCRIPT happened
    flusher.close()


async def test_a_restarted_server_leaves_nothing(
    own_redis: RedisServer, no_collector: None
) -> None:
    # Every pooled connection is broken by the restart; each decision retries on a fresh
    # one, so the caller sees no error, and the broken connections' errors must not linger.
    storage = RedisStorage(own_redis.url, connect_timeout=2.0, socket_timeout=2.0)
    await _burst(storage)
    own_redis.stop()
    own_redis.start()
    assert await _left_behind(lambda: _burst(storage)) == {}
    await storage.aclose()


async def test_a_timed_out_decision_leaves_nothing(
    own_redis: RedisServer, no_collector: None
) -> None:
    # The timed-out connection is closed; redis-py keeps its last stream until it
    # reconnects, which the burst after the pause makes it do.
    storage = FailoverStorage(
        RedisStorage(own_redis.url, connect_timeout=2.0, socket_timeout=0.2), "fail_open"
    )
    await _burst(storage)

    async def timed_out_then_recovered() -> None:
        own_redis.pause()
        try:
            results = await storage.decide(CHECKS, 1)
        finally:
            own_redis.resume()
        assert type(results[0]).__name__ == "UncheckedResult"  # the policy answered
        del results
        await _burst(storage)

    assert await _left_behind(timed_out_then_recovered) == {}
    assert storage.get_metrics()["errors_by_type"] == {"ConnectionLost": 1}  # silent: dead
    await storage.aclose()


class _RequestState:
    """Stands for what a web request keeps in context variables."""


_REQUEST: contextvars.ContextVar[_RequestState] = contextvars.ContextVar("request")


async def test_a_connection_opened_during_a_request_does_not_keep_the_request(
    redis_url: str,
) -> None:
    # A socket's read handle keeps the context it was created in for the socket's life:
    # a decision connection opened in a request's context would keep that request's
    # context variables (and all they reference) alive as long as the connection.
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0)
    kept: list[weakref.ref[_RequestState]] = []

    async def request() -> None:
        state = _RequestState()
        kept.append(weakref.ref(state))
        _REQUEST.set(state)
        await storage.decide(CHECKS, 1)  # opens the storage's first connection

    await asyncio.get_running_loop().create_task(request(), context=contextvars.Context())
    await asyncio.sleep(0)
    gc.collect()
    assert kept[0]() is None
    await storage.aclose()
