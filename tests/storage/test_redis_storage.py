"""RedisStorage against a real redis-server: TTLs, script cache loss, clock, errors."""

from __future__ import annotations

import math
import time

import pytest
import redis

from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.ratelimit.stores.script import DECIDE_SHA
from sergas_guard.storage import storage_from_url
from tests.servers import free_port

pytestmark = pytest.mark.redis

S = RateLimitStrategy
ALL = pytest.mark.parametrize("strategy", list(RateLimitStrategy))


@ALL
def test_every_key_lives_exactly_until_its_horizon(
    redis_storage: RedisStorage, strategy: RateLimitStrategy
) -> None:
    spec = LimitSpec(strategy, 4, 150_000, 4)
    check = [LimitCheck(f"ttl:{strategy}", spec)]
    client = redis_storage.sync_client
    for cost in (1, 2):
        started = time.monotonic()
        result = redis_storage.decide_sync(check, cost)[0]
        ttl_ms = client.pttl(check[0].key)
        since_ms = (time.monotonic() - started) * 1000
        # The expiry is now + horizon (reset_after), rounded up to the millisecond; by
        # the PTTL, at most the time since the decision has passed on the server too.
        assert 0 < ttl_ms <= math.ceil(result.reset_after * 1000) + 1
        assert ttl_ms >= int(result.reset_after * 1000) - math.ceil(since_ms) - 1
    deadline = time.monotonic() + 5
    while client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.dbsize() == 0


def test_a_peek_and_a_rejection_write_nothing(redis_storage: RedisStorage) -> None:
    spec = LimitSpec(S.FIXED_WINDOW, 1, 60_000_000, 1)
    check = [LimitCheck("quiet", spec)]
    redis_storage.decide_sync(check, 0)
    assert redis_storage.sync_client.dbsize() == 0
    redis_storage.decide_sync(check, 1)
    before = redis_storage.sync_client.get("quiet")
    assert not redis_storage.decide_sync(check, 1)[0].allowed
    assert redis_storage.sync_client.get("quiet") == before


async def test_decisions_survive_a_script_flush(redis_storage: RedisStorage) -> None:
    spec = LimitSpec(S.SLIDING_LOG, 3, 60_000_000, 3)
    check = [LimitCheck("flushed", spec)]
    assert redis_storage.decide_sync(check, 1)[0].remaining == 2
    client = redis_storage.sync_client
    assert client.script_exists(DECIDE_SHA) == [True]
    client.script_flush()
    assert redis_storage.decide_sync(check, 1)[0].remaining == 1
    client.script_flush()
    assert (await redis_storage.decide(check, 1))[0].remaining == 0
    assert client.script_exists(DECIDE_SHA) == [True]
    await redis_storage.aclose()


def test_the_server_clock_decides(redis_storage: RedisStorage) -> None:
    hour = 3_600_000_000
    spec = LimitSpec(S.FIXED_WINDOW, 10, hour, 10)
    seconds, micros = redis_storage.sync_client.time()
    server_now = seconds * 1_000_000 + micros
    result = redis_storage.decide_sync([LimitCheck("clock", spec)], 1)[0]
    expected = (hour - server_now % hour) / 1_000_000
    assert expected - 1.0 <= result.reset_after <= expected


def test_the_sliding_log_stays_bounded_by_the_limit(redis_storage: RedisStorage) -> None:
    spec = LimitSpec(S.SLIDING_LOG, 50, 60_000_000, 50)
    check = [LimitCheck("log", spec)]
    for _ in range(40):
        redis_storage.decide_sync(check, 7)
    assert redis_storage.sync_client.llen("log") == 49


def test_a_cost_above_the_capacity_is_a_configuration_error(redis_storage: RedisStorage) -> None:
    spec = LimitSpec(S.SLIDING_LOG, 5, 60_000_000, 5)
    with pytest.raises(ConfigurationError) as caught:
        redis_storage.decide_sync([LimitCheck("big", spec)], 6)
    assert caught.value.field == "cost"
    with pytest.raises(ConfigurationError):
        redis_storage.decide_sync([], 1)
    assert redis_storage.sync_client.dbsize() == 0


def test_limits_too_large_for_exact_lua_arithmetic_are_refused(redis_storage: RedisStorage) -> None:
    spec = LimitSpec(S.SLIDING_WINDOW, 10**6, 10**13, 10**6)
    with pytest.raises(ConfigurationError, match="2\\*\\*53"):
        redis_storage.decide_sync([LimitCheck("huge", spec)], 1)


def test_clear_without_a_prefix_deletes_only_the_storage_prefix(
    redis_storage: RedisStorage,
) -> None:
    client = redis_storage.sync_client
    client.set("someone-else", "1")
    spec = LimitSpec(S.TOKEN_BUCKET, 5, 60_000_000, 5)
    for i in range(1200):  # more than one SCAN page and one UNLINK batch
        client.set(f"sg:bulk:{{{i}}}:x", "1")
    redis_storage.decide_sync([LimitCheck("sg:api:{u}:tb", spec)], 1)
    assert redis_storage.clear_sync() == 1201
    assert client.keys("*") == [b"someone-else"]


def test_urls_build_redis_storages_and_hide_passwords() -> None:
    storage = storage_from_url("redis://user:hunter2@127.0.0.1:1/0", socket_timeout=0.1)
    assert isinstance(storage, RedisStorage)
    assert "hunter2" not in repr(storage)
    cluster = storage_from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert isinstance(cluster, RedisStorage)
    assert cluster.is_cluster
    with pytest.raises(ConfigurationError):
        RedisStorage("redis://127.0.0.1:1", socket_timeout=0)
    with pytest.raises(ConfigurationError):
        RedisStorage()


async def test_an_unreachable_server_is_storage_unavailable_without_the_password() -> None:
    storage = RedisStorage(f"redis://:hunter2@127.0.0.1:{free_port()}/0", connect_timeout=0.2)
    check = [LimitCheck("k", LimitSpec(S.FIXED_WINDOW, 1, 1_000_000, 1))]
    with pytest.raises(StorageUnavailable) as sync_error:
        storage.decide_sync(check, 1)
    with pytest.raises(StorageUnavailable) as async_error:
        await storage.decide(check, 1)
    for error in (sync_error.value, async_error.value):
        assert "hunter2" not in str(error)
    await storage.aclose()


def test_a_user_supplied_client_is_used(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    storage = RedisStorage(sync_client=client)
    spec = LimitSpec(S.TOKEN_BUCKET, 2, 1_000_000, 2)
    assert storage.decide_sync([LimitCheck("mine", spec)], 1)[0].remaining == 1
    assert client.exists("mine") == 1
    with pytest.raises(ConfigurationError):
        _ = storage.client  # no async client and no URL to build one
    storage.close_sync()
