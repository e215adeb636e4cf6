"""Issue 14's observation, as a test: a cold-start burst on a busy host stays exact.

Four freshly spawned processes build a limiter with default settings on one real
redis-server and each fire ``concurrency`` concurrent ``await limiter.hit("k")`` at one
100/hour limit, while two CPU-bound processes run beside them. Before the failover
learned to tell a burst from an outage, connects that missed a 50 ms deadline opened
the circuit and every process fell back to its own copy of the whole limit: 100-344
admitted at 100 concurrent, 400 at 1,000. Exactly 100 must be admitted, every time,
and no exception may reach a caller. The same holds on a 3-master Redis Cluster, and
on the sync face (``concurrency`` threads per process, one ``hit_sync`` each).

The default run is a representative subset, one burst each (about 5-15 s each on two
busy cores). ``SG_BURST_RUNS=10`` repeats each burst ten times; ``SG_BURST_ALL=1`` runs
every strategy at 100 and 1,000 concurrent, on both faces. (issue 14 asks for 10 runs
in a row; benchmarks/bench_redis_exactness.py prints the full table.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.servers import RedisCluster, RedisServer, redis_cluster, redis_server
from tests.storage._burst import LIMIT, STRATEGIES, burst, cpu_hogs

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RUNS = int(os.environ.get("SG_BURST_RUNS", "1"))
EVERY = os.environ.get("SG_BURST_ALL")
# (concurrency, strategy, contender): "ours" is the async face, "sync" the sync face.
CASES = (
    list(itertools.product((100, 1000), STRATEGIES, ("ours", "sync")))
    if EVERY
    else [
        (100, "sliding_window", "ours"),
        (1000, "token_bucket", "ours"),
        (100, "sliding_log", "sync"),
    ]
)
CLUSTER_CASES = CASES if EVERY else [(1000, "sliding_log", "ours"), (100, "fixed_window", "sync")]
_names = itertools.count()


@pytest.fixture(scope="module")
def hogs() -> Iterator[None]:
    """Two CPU hogs running beside every burst of the module (a busy host)."""
    with cpu_hogs(2):
        yield


@pytest.fixture(scope="module")
def busy_redis(hogs: None) -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def busy_cluster(hogs: None) -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster


def exactly_the_limit(url: str, concurrency: int, strategy: str, contender: str) -> None:
    for run in range(RUNS):
        outcome = burst(
            url,
            name=f"burst{next(_names)}",
            strategy=strategy,
            processes=4,
            concurrency=concurrency,
            contender=contender,
        )
        where = f"run {run + 1} of {RUNS}: {outcome.results}, slowest {outcome.slowest:.2f}s"
        assert not outcome.exceptions, where
        assert outcome.admitted == LIMIT, where
        # Every answer came from Redis: no process fell back to counting alone.
        assert set(outcome.results) == {"RateLimitResult"}, where
        assert all(o.storage["state"] == "closed" for o in outcome.outcomes), where
        assert not [o.close_error for o in outcome.outcomes if o.close_error], where


@pytest.mark.parametrize(("concurrency", "strategy", "contender"), CASES)
def test_a_cold_burst_on_a_busy_host_admits_exactly_the_limit(
    busy_redis: RedisServer, concurrency: int, strategy: str, contender: str
) -> None:
    exactly_the_limit(busy_redis.url, concurrency, strategy, contender)


@pytest.mark.cluster
@pytest.mark.parametrize(("concurrency", "strategy", "contender"), CLUSTER_CASES)
def test_a_cold_burst_on_a_busy_cluster_admits_exactly_the_limit(
    busy_cluster: RedisCluster, concurrency: int, strategy: str, contender: str
) -> None:
    exactly_the_limit(busy_cluster.url, concurrency, strategy, contender)
