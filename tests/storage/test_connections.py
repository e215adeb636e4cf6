"""RedisStorage's own connections for decisions, against a real redis-server.

Decisions on a single server bypass redis-py's per-command machinery; these tests pin
what that path must still do: bound concurrency without failing, hand connections on,
recover from a broken socket, give up on a frozen server, and never share a socket
with a forked child.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os

import pytest
import redis

from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.redis.errors import ConnectionLost
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

LONG_WINDOW_US = 10**12


def checks(identity: str, limit: int = 1000) -> list[LimitCheck]:
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, limit, LONG_WINDOW_US, limit)
    return [LimitCheck(f"sg:conn:{{{identity}}}", spec)]


async def test_1000_concurrent_decisions_share_the_few_connections(redis_url: str) -> None:
    # Issue 14: a burst used to open up to 100 connections at once, and their connects
    # timed out on a busy host. Now every decision is pipelined on the storage's few
    # multiplexed connections (per face): at most that many are opened.
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0)
    results = await asyncio.gather(*(storage.decide(checks("crowd", 2000), 1) for _ in range(1000)))
    assert all(r[0].allowed for r in results)
    # Exactly 1000 units counted, each reported once: remaining values 1999..1000.
    assert sorted(r[0].remaining for r in results) == list(range(1000, 2000))
    assert len(admin.client_list()) - before == storage.max_connections
    admin.close()
    await storage.aclose()


async def test_max_connections_sets_how_many_are_shared(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0, max_connections=3)
    results = await asyncio.gather(*(storage.decide(checks("queue"), 1) for _ in range(60)))
    assert all(r[0].allowed for r in results)
    assert len(admin.client_list()) - before == 3
    admin.close()
    await storage.aclose()


async def test_a_frozen_server_times_out_every_pipelined_call(own_redis: RedisServer) -> None:
    storage = RedisStorage(
        own_redis.url, socket_timeout=0.3, connect_timeout=0.3, max_connections=1
    )
    await storage.decide(checks("ice"), 1)
    own_redis.pause()
    try:
        outcomes = await asyncio.gather(
            storage.decide(checks("ice"), 1),
            storage.decide(checks("ice"), 1),
            return_exceptions=True,
        )
    finally:
        own_redis.resume()
    # Both went out on the one connection, pipelined; neither got a reply in time.
    assert all(isinstance(o, StorageUnavailable) and "Timeout" in str(o) for o in outcomes)
    # The silent connection was closed, not left with late replies to misread: the next
    # decision reads its own reply (a fresh key), not the frozen requests'.
    fresh = await storage.decide(checks("thaw"), 0)
    assert fresh[0].remaining == 1000
    after = await storage.decide(checks("ice"), 0)
    # The requests sent to the frozen server may have run on resume.
    assert after[0].remaining in (997, 998, 999)
    await storage.aclose()


async def test_a_restarted_server_costs_no_failed_decision(own_redis: RedisServer) -> None:
    storage = RedisStorage(own_redis.url, connect_timeout=2.0, socket_timeout=2.0)
    assert storage.decide_sync(checks("phoenix"), 1)[0].allowed
    assert (await storage.decide(checks("phoenix"), 1))[0].allowed
    own_redis.stop()
    own_redis.start()
    # Both pooled sockets are dead; the one retry on a broken connection reconnects.
    assert storage.decide_sync(checks("phoenix"), 1)[0].allowed
    assert (await storage.decide(checks("phoenix"), 1))[0].allowed
    await storage.aclose()


async def test_a_call_written_before_the_server_died_fails_and_is_not_resent(
    own_redis: RedisServer,
) -> None:
    # The command reached the server (which may have run it): resending it to the next
    # server would count it twice, so the caller gets StorageUnavailable instead.
    storage = RedisStorage(
        own_redis.url, connect_timeout=2.0, socket_timeout=2.0, max_connections=1
    )
    assert storage.decide_sync(checks("once"), 1)[0].allowed
    assert (await storage.decide(checks("once"), 1))[0].allowed
    own_redis.pause()
    flying = asyncio.ensure_future(storage.decide(checks("once"), 1))
    threaded = asyncio.ensure_future(asyncio.to_thread(storage.decide_sync, checks("once"), 1))
    await asyncio.sleep(0.2)  # both written, both waiting for a reply
    assert own_redis.process is not None
    own_redis.process.kill()  # SIGKILL: the kernel closes its sockets
    own_redis.process.wait()
    outcomes = await asyncio.gather(flying, threaded, return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionLost, ConnectionLost]
    own_redis.start()
    # The connections that broke are replaced on the next call.
    assert storage.decide_sync(checks("once"), 1)[0].remaining == 999
    assert (await storage.decide(checks("once"), 1))[0].remaining == 998
    await storage.aclose()


def _decide_in_child(storage: RedisStorage, url: str) -> None:
    result = storage.decide_sync(checks("fork"), 1)[0]
    # The parent's idle connection, the child's own, and the one counting them.
    clients = len(redis.Redis.from_url(url).client_list())
    os._exit(0 if result.remaining == 998 and clients == 3 else 1)


def test_a_forked_child_opens_its_own_connection(redis_url: str) -> None:
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0)
    assert storage.decide_sync(checks("fork"), 1)[0].remaining == 999
    child = multiprocessing.get_context("fork").Process(
        target=_decide_in_child, args=(storage, redis_url)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    # Had the child written on the parent's socket, replies would now be crossed.
    assert storage.decide_sync(checks("fork"), 1)[0].remaining == 997
    storage.close_sync()


def test_max_connections_must_be_positive(redis_url: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        RedisStorage(redis_url, max_connections=0)
    assert error.value.field == "max_connections"


async def test_closing_with_decisions_in_flight_leaks_no_connection(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0, max_connections=4)
    flying = [asyncio.ensure_future(storage.decide(checks("late"), 1)) for _ in range(12)]
    await asyncio.sleep(0)  # every task has started: four sending, eight waiting
    await storage.aclose()
    outcomes = await asyncio.gather(*flying, return_exceptions=True)
    # Each finished its round trip or was refused cleanly: nothing hangs.
    assert all(isinstance(o, list | StorageUnavailable) for o in outcomes), outcomes
    await asyncio.sleep(0.05)  # the connections handed back after close are closing
    gc.collect()  # an unclosed connection would warn (an error under this suite)
    assert len(admin.client_list()) <= before
    admin.close()


async def test_the_url_may_set_the_connections_and_redis_py_clients_still_work(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    storage = RedisStorage(
        redis_url + "?connections=3&client_name=sg-test", connect_timeout=2.0, socket_timeout=2.0
    )
    results = await asyncio.gather(*(storage.decide(checks("url"), 1) for _ in range(30)))
    assert sorted(r[0].remaining for r in results) == list(range(970, 1000))
    names = [c["name"] for c in admin.client_list()]
    assert names.count("sg-test") == 3  # our handshake named them
    assert len(names) - before == 3
    assert storage.sync_client.ping()  # redis-py's client takes the URL without ours
    admin.close()
    await storage.aclose()
