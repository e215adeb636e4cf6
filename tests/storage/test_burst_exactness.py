"""Issue 14's observation, as a test: a cold-start burst on a busy host stays exact.

Four freshly spawned processes build a limiter with default settings on one real
redis-server and each fire ``concurrency`` concurrent ``await limiter.hit("k")`` at one
100/hour limit, while two CPU-bound processes run beside them. Before the failover
learned to tell a burst from an outage, connects that missed a 50 ms deadline opened
the circuit and every process fell back to its own copy of the whole limit: 100-344
admitted at 100 concurrent, 400 at 1,000. Exactly 100 must be admitted, every time,
and no exception may reach a caller.

The default run is a representative subset, one burst each (about 5-15 s on two busy
cores). ``SG_BURST_RUNS=10`` repeats each burst ten times; ``SG_BURST_ALL=1`` runs
every strategy at 100 and 1,000 concurrent. (issue 14 asks for 10 runs in a row.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.servers import RedisServer, redis_server
from tests.storage._burst import LIMIT, STRATEGIES, burst, cpu_hogs

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RUNS = int(os.environ.get("SG_BURST_RUNS", "1"))
CASES = (
    list(itertools.product((100, 1000), STRATEGIES))
    if os.environ.get("SG_BURST_ALL")
    else [(100, "sliding_window"), (1000, "token_bucket")]
)
_names = itertools.count()


@pytest.fixture(scope="module")
def busy_redis() -> Iterator[RedisServer]:
    """One redis-server for the module, with two CPU hogs running beside it."""
    with redis_server() as server, cpu_hogs(2):
        yield server


@pytest.mark.parametrize(("concurrency", "strategy"), CASES)
def test_a_cold_burst_on_a_busy_host_admits_exactly_the_limit(
    busy_redis: RedisServer, concurrency: int, strategy: str
) -> None:
    for run in range(RUNS):
        outcome = burst(
            busy_redis.url,
            name=f"burst{next(_names)}",
            strategy=strategy,
            processes=4,
            concurrency=concurrency,
        )
        where = f"run {run + 1} of {RUNS}: {outcome.results}, slowest {outcome.slowest:.2f}s"
        assert not outcome.exceptions, where
        assert outcome.admitted == LIMIT, where
        # Every answer came from Redis: no process fell back to counting alone.
        assert set(outcome.results) == {"RateLimitResult"}, where
        assert all(o.storage["state"] == "closed" for o in outcome.outcomes), where
