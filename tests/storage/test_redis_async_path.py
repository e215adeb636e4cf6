"""The async decision path's own reply reading, against a real redis-server.

After redis-py's handshake, replies are read by a protocol of ours and deadlines are kept
by one watchdog per storage: these tests pin that a reply is never read as another
call's, that every call in flight gets its deadline, and that error replies keep their
meaning.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from sergas_guard.errors import StorageError, StorageUnavailable
from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

SPEC = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1000, 60_000_000, 1000)


def checks(identity: str, spec: LimitSpec = SPEC) -> list[LimitCheck]:
    return [LimitCheck(f"sg:path:{{{identity}}}", spec)]


async def test_a_cancelled_decision_never_hands_its_reply_to_the_next(
    own_redis: RedisServer,
) -> None:
    # One connection, so the next decision uses the very socket the cancelled one wrote
    # on; the server is frozen meanwhile, so both replies would come back in a row.
    storage = RedisStorage(
        own_redis.url, connect_timeout=2.0, socket_timeout=2.0, max_connections=1
    )
    await storage.decide(checks("warm"), 1)
    own_redis.pause()
    try:
        flying = asyncio.ensure_future(storage.decide(checks("cancelled"), 7))
        await asyncio.sleep(0)  # sent; now awaiting its reply
        flying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flying
        following = asyncio.ensure_future(storage.decide(checks("fresh"), 1))
        await asyncio.sleep(0.05)  # sent too, on the same connection had it stayed open
    finally:
        own_redis.resume()
    # Its own reply: one unit on "fresh", not the 7 units of "cancelled".
    assert (await following)[0].remaining == 999
    # The cancelled request reached the frozen server and may have run on resume.
    assert (await storage.decide(checks("cancelled"), 0))[0].remaining in (993, 1000)
    await storage.aclose()


async def test_every_call_in_flight_on_a_frozen_server_times_out(own_redis: RedisServer) -> None:
    storage = RedisStorage(own_redis.url, connect_timeout=2.0, socket_timeout=0.2)
    await asyncio.gather(*(storage.decide(checks(f"c{n}"), 1) for n in range(5)))
    own_redis.pause()
    try:
        outcomes = await asyncio.gather(
            *(storage.decide(checks(f"c{n}"), 1) for n in range(5)), return_exceptions=True
        )
    finally:
        own_redis.resume()
    assert all(isinstance(o, StorageUnavailable) and "Timeout" in str(o) for o in outcomes)
    # The timed-out connections were closed; fresh ones read their own replies.
    after = await asyncio.gather(*(storage.decide(checks(f"new{n}"), 1) for n in range(5)))
    assert [r[0].remaining for r in after] == [999] * 5
    await storage.aclose()


async def test_an_error_reply_is_a_storage_error_and_the_connection_stays_usable(
    redis_url: str,
) -> None:
    storage = RedisStorage(redis_url, connect_timeout=2.0, socket_timeout=2.0, max_connections=1)
    log = LimitSpec(RateLimitStrategy.SLIDING_LOG, 10, 60_000_000, 10)
    admin = redis.Redis.from_url(redis_url)
    admin.hset("sg:path:{wrong}", "field", "value")  # the sliding log needs a list here
    admin.close()
    with pytest.raises(StorageError) as error:
        await storage.decide(checks("wrong", log), 1)
    assert not isinstance(error.value, StorageUnavailable)  # Redis answered: not an outage
    assert "WRONGTYPE" in str(error.value)
    assert (await storage.decide(checks("right", log), 1))[0].remaining == 9
    await storage.aclose()
