"""fallback_share="auto": processes count each other through Redis and, while it is
down, each enforces ``limit // peers``, so an outage cannot multiply a limit.

Real processes (spawned), a real redis-server stopped mid-run. The bound guaranteed:
while Redis is unreachable, N processes that each last read a peer count of at least
N admit together at most N * max(1, L // N) per window of a limit L, which is at most
L when L >= N; on top of what Redis admitted in the same window before the outage.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.clock import ManualClock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit import RateLimiter
from sergas_guard.ratelimit.stores.failover import FallbackResult
from sergas_guard.ratelimit.stores.peers import PEER_TTL_SECONDS, Peers, peers_key, process_id
from sergas_guard.storage import FailoverStorage, MemoryStorage, RedisStorage
from tests.servers import RedisCluster, RedisServer, free_port
from tests.storage._burst import outage

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(("limit", "processes"), [(20, 3)])
def test_processes_sharing_a_limit_stay_within_it_while_redis_is_down(
    own_redis: RedisServer, limit: int, processes: int
) -> None:
    reports = outage(
        own_redis,
        name="shared",
        rate=f"{limit}/hour",
        processes=processes,
        before=2,
        during=50,
    )
    share = limit // processes  # 6 of 20 each: rounded down
    assert [r["peers_seen"] for r in reports] == [processes] * processes
    assert sum(r["before"] for r in reports) == 2 * processes  # Redis counted these
    for report in reports:
        # Each process enforced its share, alone, with no exception to a caller.
        assert report["during"] == share, report
        assert set(report["kinds"]) == {"FallbackResult"}, report
        metrics = report["metrics"]
        assert metrics["peers"] == processes
        assert metrics["fallback_share"] == "auto"
        assert metrics["share_in_force"] == pytest.approx(1 / processes, abs=1e-6)
    during = sum(r["during"] for r in reports)
    assert during == processes * share <= limit


def test_the_heartbeat_counts_live_members_and_expires(redis_url: str) -> None:
    storage = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    try:
        assert storage.heartbeat_sync(process_id(), 300) == 1
        assert storage.heartbeat_sync(process_id(), 300) == 1  # the same process
        assert storage.heartbeat_sync("another-process", 300) == 2
        client = storage.sync_client
        assert 0 < client.pttl(peers_key("sg")) <= 300  # the set itself expires
        time.sleep(0.35)
        assert storage.heartbeat_sync(process_id(), 300) == 1  # the other one is gone
    finally:
        storage.close_sync()


async def test_the_async_heartbeat_rides_on_a_successful_decision(redis_url: str) -> None:
    clock = ManualClock()
    storage = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    await storage.heartbeat("peer-a", int(PEER_TTL_SECONDS * 1000))
    limiter = RateLimiter("10/minute", FailoverStorage(storage, clock=clock))
    failover = limiter.storage
    assert isinstance(failover, FailoverStorage)
    assert failover.peers is not None
    assert failover.peers.count is None
    await limiter.hit("x")
    for _ in range(200):
        if failover.peers.count is not None:
            break
        await asyncio.sleep(0.01)
    assert failover.peers.count == 2  # this process and peer-a
    beats = failover.peers.beats
    await limiter.hit("x")
    await asyncio.sleep(0.05)
    assert failover.peers.beats == beats  # not due again yet
    clock.advance(1.0)  # the first recount comes after a second
    await limiter.hit("x")
    for _ in range(200):
        if failover.peers.beats > beats:
            break
        await asyncio.sleep(0.01)
    assert failover.peers.beats == beats + 1
    await limiter.aclose()


def test_the_sync_face_beats_in_the_deciding_thread(redis_url: str) -> None:
    storage = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    limiter = RateLimiter("10/minute", storage)
    failover = limiter.storage
    assert isinstance(failover, FailoverStorage)
    assert failover.peers is not None
    limiter.hit_sync("x")
    assert failover.peers.count == 1
    assert limiter.get_metrics(detailed=True)["storage"]["peers"] == 1
    limiter.close()


def test_a_failed_heartbeat_leaves_the_last_count() -> None:
    dead = RedisStorage(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    peers = Peers(dead, ManualClock())
    peers.count = 4
    peers.beat_sync()
    assert (peers.count, peers.failed_beats) == (4, 1)


@settings(max_examples=40, deadline=None)
@given(limit=st.integers(1, 60), count=st.integers(1, 9), burst=st.integers(1, 60))
def test_the_auto_share_is_the_limit_divided_by_the_peers_rounded_down(
    limit: int, count: int, burst: int
) -> None:
    # Redis unreachable (nothing listens): every decision is the fallback's. The peer
    # count is set by hand: the heartbeat that sets it is tested above with real peers.
    dead = RedisStorage(f"redis://127.0.0.1:{_DEAD_PORT}/0", connect_timeout=0.5)
    failover = FailoverStorage(dead, clock=ManualClock())
    assert failover.peers is not None
    failover.peers.count = count
    limiter = RateLimiter(f"{limit}/hour", failover, strategy="token_bucket", burst=max(burst, 1))
    results = [limiter.hit_sync("k") for _ in range(burst + 2)]
    assert all(type(r) is FallbackResult for r in results)
    expected = max(1, burst // count)
    assert sum(r.allowed for r in results) == expected
    assert results[0].limit == expected
    # Fewer units than processes: each still admits one (documented), so the fleet
    # may admit up to `count` where the limit is smaller.
    limiter.close()


_DEAD_PORT = free_port()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"fallback_share": "half"}, "fallback_share"),
        ({"fallback_share": 0}, "fallback_share"),
        ({"fallback_share": 1.5}, "fallback_share"),
        ({"fallback_share": True}, "fallback_share"),
        ({"fallback_share": float("nan")}, "fallback_share"),
        ({"failure_window": 0}, "failure_window"),
        ({"failure_rate": 120}, "failure_rate"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"failure_threshold": 0}, "failure_threshold"),
    ],
)
def test_bad_failover_options_name_their_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        FailoverStorage(MemoryStorage(), **options)
    assert caught.value.field == field


def test_a_fixed_share_or_another_policy_needs_no_heartbeat() -> None:
    dead = RedisStorage(f"redis://127.0.0.1:{_DEAD_PORT}/0")
    assert FailoverStorage(dead, fallback_share=0.5).peers is None
    assert FailoverStorage(dead, "fail_open").peers is None
    assert FailoverStorage(dead).get_metrics()["share_in_force"] == 1.0


@pytest.mark.cluster
async def test_the_heartbeat_works_on_a_cluster(redis_cluster_session: RedisCluster) -> None:
    storage = RedisStorage(redis_cluster_session.url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        ttl = int(PEER_TTL_SECONDS * 1000)
        assert storage.heartbeat_sync("cluster-peer-a", ttl) >= 1
        assert await storage.heartbeat("cluster-peer-b", ttl) >= 2
    finally:
        await storage.aclose()
