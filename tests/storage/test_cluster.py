"""RedisStorage on a real 3-master Redis Cluster started on loopback by the test suite."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis
from redis.crc import key_slot

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.result import LimitSpec
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import RedisCluster
from tests.storage._hammer import LIMIT, hammer_async, hammer_threads
from tests.storage.conftest import _flush_cluster

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


@pytest.fixture
def cluster(redis_cluster_session: RedisCluster) -> Iterator[RedisCluster]:
    yield redis_cluster_session
    _flush_cluster(redis_cluster_session)


@pytest.fixture
def storage(cluster: RedisCluster) -> Iterator[RedisStorage]:
    made = RedisStorage(cluster.url, connect_timeout=5.0, socket_timeout=5.0)
    yield made
    made.close_sync()


def node_sizes(cluster: RedisCluster) -> list[int]:
    sizes = []
    for host, port in cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        sizes.append(int(node.dbsize()))
        node.close()
    return sizes


def spread_identities(cluster: RedisCluster, count: int) -> list[str]:
    """``count`` random identities whose hash tags fall on at least two masters (random
    ones all land on one of three masters now and then, which proves nothing)."""
    host, port = cluster.startup_nodes[0]
    node = redis.Redis(host=host, port=port)
    ranges = node.execute_command("CLUSTER SLOTS", NEVER_DECODE=True)  # type: ignore[no-untyped-call]
    owners = [(int(start), int(end), int(master[1])) for start, end, master, *_ in ranges]
    node.close()
    while True:
        identities = [uuid.uuid4().hex for _ in range(count)]
        masters = {
            port
            for identity in identities
            for start, end, port in owners
            if start <= key_slot(identity.encode()) <= end
        }
        if len(masters) >= 2:
            return identities


def test_processes_and_tasks_with_several_limits_admit_exactly_the_limit(
    cluster: RedisCluster,
) -> None:
    identities = spread_identities(cluster, len(RateLimitStrategy))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        futures = {
            strategy.value: [
                pool.submit(hammer_async, cluster.url, identity, strategy.value, 50, 2, True)
                for _ in range(4)
            ]
            for strategy, identity in zip(RateLimitStrategy, identities, strict=True)
        }
        admitted = {s: sum(f.result() for f in fs) for s, fs in futures.items()}
    assert admitted == dict.fromkeys(admitted, LIMIT)
    # The identities' keys landed on more than one master.
    assert sum(size > 0 for size in node_sizes(cluster)) >= 2, (node_sizes(cluster), identities)


@pytest.mark.parametrize("strategy", ["sliding_log", "token_bucket"])
def test_threads_on_the_cluster_admit_exactly_the_limit(
    cluster: RedisCluster, strategy: str
) -> None:
    admitted = hammer_threads(cluster.url, uuid.uuid4().hex, strategy, 12, 20, extra=True)
    assert admitted == LIMIT


async def test_a_limiter_with_several_limits_on_the_cluster(storage: RedisStorage) -> None:
    limiter = RateLimiter(
        RateLimitConfig(name="api", rate="3/minute; 5/hour", strategy="sliding_log"), storage
    )
    assert [(await limiter.hit("zoe")).allowed for _ in range(4)] == [True] * 3 + [False]
    decision = await limiter.decide("zoe", 0)
    assert [r.remaining for r in decision.results] == [0, 2]
    await limiter.reset("zoe")
    assert (await limiter.peek("zoe")).remaining == 3
    await limiter.aclose()


def test_keys_in_different_slots_cannot_be_decided_together(storage: RedisStorage) -> None:
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 5, 60_000_000, 5)
    with pytest.raises(ConfigurationError, match="hash tag"):
        storage.decide_sync([LimitCheck("{a}:x", spec), LimitCheck("{b}:x", spec)], 1)


async def test_clear_scans_every_master(storage: RedisStorage, cluster: RedisCluster) -> None:
    spec = LimitSpec(RateLimitStrategy.TOKEN_BUCKET, 5, 60_000_000, 5)
    for i in range(60):
        storage.decide_sync([LimitCheck(f"sg:c:{{user{i}}}:tb", spec)], 1)
    assert all(size > 0 for size in node_sizes(cluster))
    assert storage.clear_sync("sg:c:{user1") == 11  # user1, user10..user19
    assert await storage.clear("sg:c:") == 49
    assert node_sizes(cluster) == [0, 0, 0]
    await storage.aclose()


def test_decisions_survive_a_script_flush_on_every_master(
    storage: RedisStorage, cluster: RedisCluster
) -> None:
    spec = LimitSpec(RateLimitStrategy.SLIDING_WINDOW, 3, 60_000_000, 3)
    checks = [[LimitCheck(f"{{id{i}}}:sw", spec)] for i in range(10)]
    assert all(storage.decide_sync(c, 1)[0].remaining == 2 for c in checks)
    storage.sync_client.script_flush()
    assert all(storage.decide_sync(c, 1)[0].remaining == 1 for c in checks)
