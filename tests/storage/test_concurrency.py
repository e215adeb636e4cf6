"""Exact under concurrency: many processes and tasks on one key admit exactly the limit.

4 OS processes x 50 asyncio tasks (and, through the sync face, threads) hammer one key
with a limit of 100 per long window, against a real redis-server. Every strategy is
exact here: nothing refills or slides within the run, so exactly 100 are admitted.
"""

from __future__ import annotations

import multiprocessing
import struct
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from sergas_guard.ratelimit.result import RateLimitStrategy
from tests.storage._hammer import LIMIT, checks_for, hammer_async, hammer_threads

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROCESSES, TASKS, PER_TASK = 4, 50, 2
STRATEGIES = [s.value for s in RateLimitStrategy]


def run_processes(url: str, extra: bool) -> dict[str, int]:
    """Admitted count per strategy, each strategy on its own key, all processes at once."""
    identities = {s: f"{s}-{uuid.uuid4().hex}" for s in STRATEGIES}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures: dict[str, list[Any]] = {
            s: [
                pool.submit(hammer_async, url, identities[s], s, TASKS, PER_TASK, extra)
                for _ in range(PROCESSES)
            ]
            for s in STRATEGIES
        }
        return {s: sum(f.result() for f in fs) for s, fs in futures.items()}


def test_processes_times_tasks_admit_exactly_the_limit(redis_url: str) -> None:
    admitted = run_processes(redis_url, extra=False)
    assert admitted == dict.fromkeys(STRATEGIES, LIMIT)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_threads_through_the_sync_face_admit_exactly_the_limit(
    redis_url: str, strategy: str
) -> None:
    assert hammer_threads(redis_url, uuid.uuid4().hex, strategy, 16, 20, extra=False) == LIMIT


def test_several_limits_for_one_identity_under_concurrency(redis_url: str) -> None:
    import redis

    identity = uuid.uuid4().hex
    admitted = hammer_threads(redis_url, identity, "sliding_log", 16, 20, extra=True)
    assert admitted == LIMIT
    # All or nothing: the looser limits counted exactly the admitted requests.
    client = redis.Redis.from_url(redis_url)
    _, window, fixed = checks_for(identity, RateLimitStrategy.SLIDING_LOG, extra=True)
    # States are little-endian doubles: (start, current, previous) and (start, used).
    window_state, fixed_state = client.get(window.key), client.get(fixed.key)
    assert isinstance(window_state, bytes)
    assert isinstance(fixed_state, bytes)
    assert struct.unpack("<ddd", window_state)[1] == LIMIT
    assert struct.unpack("<dd", fixed_state)[1] == LIMIT
    client.close()
