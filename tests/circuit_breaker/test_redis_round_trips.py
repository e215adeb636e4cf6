"""A shared breaker's cost and its window, on a real redis-server.

Round trips are counted by the server itself (``INFO commandstats``: calls of EVALSHA
and EVAL), for N calls in CLOSED, in OPEN and in HALF_OPEN, through the sync and the
async face. Then real processes show the window the cached state opens: after a peer
opens the breaker, a process starts at most ``shared_state_max_calls`` more calls.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from sergas_guard.circuit_breaker import CircuitBreaker, CircuitOpenError, CircuitState
from sergas_guard.circuit_breaker.redis_store import SCRIPT, RedisBreakerStore
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.circuit_breaker import workers
from tests.circuit_breaker.support import config, fail, is_refused, state, succeed

pytestmark = pytest.mark.redis

N = 40
PATIENCE = 60.0


@pytest.fixture
def storage(redis_url: str) -> Iterator[RedisStorage]:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    storage.sync_client.script_load(SCRIPT.body)  # so no EVAL of a missing script muddles a count
    yield storage
    storage.close_sync()


def script_runs(storage: RedisStorage) -> int:
    """EVALSHA and EVAL calls the server has run since its statistics were reset."""
    stats = storage.sync_client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def counting(storage: RedisStorage) -> None:
    storage.sync_client.config_resetstat()


async def calls(breaker: CircuitBreaker, face: str, fn: Any, count: int) -> Counter[str]:
    """``count`` calls through ``face``: how many ran, were refused, or failed."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        try:
            if face == "sync":
                breaker.call_sync(fn)
            else:
                await breaker.call(fn)
            seen["ran"] += 1
        except CircuitOpenError:
            seen["refused"] += 1
        except Exception:
            seen["failed"] += 1
    return seen


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_round_trips_per_call_closed_open_and_half_open(
    storage: RedisStorage, face: str
) -> None:
    breaker = CircuitBreaker(
        f"trips-{face}",
        config(window_size=100, minimum_calls=100, shared_state_max_age=60.0),
        storage=storage,
    )
    breaker.reset()  # its reply tells this process the breaker is CLOSED

    counting(storage)
    assert await calls(breaker, face, succeed, N) == {"ran": N}
    assert await calls(breaker, face, fail, N) == {"failed": N}
    assert script_runs(storage) == 2 * N  # one per call: its outcome

    breaker.transition_to_open()
    counting(storage)
    assert await calls(breaker, face, succeed, N) == {"refused": N}
    assert script_runs(storage) == 0  # refused from the state the last reply carried
    assert breaker.get_metrics()["rejected_calls"] == N  # reported with the next step

    breaker.transition_to_half_open()  # 2 probes
    first, second = CircuitBreaker(breaker.name, breaker.config, storage=storage), breaker
    counting(storage)
    with first, second:  # both probe slots held
        assert await calls(breaker, face, succeed, N) == {"refused": N}
    assert script_runs(storage) == 2 * 2 + N  # probes: slot + outcome; refusals: one each
    assert state(breaker) is CircuitState.CLOSED
    await storage.aclose()


def test_the_bare_twin_pays_two_round_trips_per_call(storage: RedisStorage) -> None:
    bare = CircuitBreaker("bare", config(), storage=RedisBreakerStore(storage, cache_state=False))
    counting(storage)
    for _ in range(N):
        bare.call_sync(succeed)
    assert script_runs(storage) == 2 * N


def test_a_view_older_than_its_max_age_asks_redis(storage: RedisStorage) -> None:
    breaker = CircuitBreaker("aged", config(shared_state_max_age=0.05), storage=storage)
    peer = CircuitBreaker("aged", config(), storage=storage)
    breaker.call_sync(succeed)
    peer.transition_to_forced_open()
    time.sleep(0.05)
    assert is_refused(breaker)


def collect(results: Any, count: int) -> list[tuple[Any, Any]]:
    return [results.get(timeout=PATIENCE) for _ in range(count)]


def test_after_a_peer_opens_each_process_starts_at_most_max_calls(
    redis_url: str, storage: RedisStorage
) -> None:
    """The worst case: every process holds a young CLOSED view with all slots free.

    Each then gets a crowd of calls after the opening: exactly ``max_calls`` run (the
    bound is tight), the rest are refused, and the next call is refused locally.
    """
    processes_count, max_calls, threads = 2, 3, 12
    name = "window"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    opened, release = context.Event(), context.Event()
    processes = [
        context.Process(
            target=workers.stale_view_crowd,
            args=(redis_url, name, max_calls, threads, opened, release, results),
        )
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    try:
        assert [outcome for _, outcome in collect(results, processes_count)] == [
            "admitted"
        ] * processes_count
        CircuitBreaker(name, config(), storage=storage).transition_to_open()
        opened.set()
        per_process: defaultdict[int, Counter[str]] = defaultdict(Counter)
        for pid, outcome in collect(results, processes_count * threads):
            per_process[pid][outcome] += 1
        release.set()
        for pid, outcome in collect(results, processes_count):
            per_process[pid][outcome] += 1
    finally:
        release.set()
        for process in processes:
            process.join(PATIENCE)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * processes_count
    assert (
        list(per_process.values())
        == [{"admitted": max_calls, "refused": threads - max_calls, "after: open": 1}]
        * processes_count
    )
    # Their outcomes carry the generation before the opening: Redis ignored them, and
    # the window holds only each process's first call, made before the opening.
    metrics = CircuitBreaker(name, config(), storage=storage).get_metrics()
    assert (metrics["state"], metrics["buffered_calls"]) == ("open", processes_count)


def test_busy_processes_through_an_opening_start_at_most_max_calls_after_it(
    redis_url: str, storage: RedisStorage
) -> None:
    """Calls and outcomes in flight in every process while a peer opens the breaker."""
    processes_count, max_calls, threads = 2, 2, 6
    name = "busy"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stop = context.Event()
    processes = [
        context.Process(
            target=workers.busy_caller,
            args=(redis_url, name, max_calls, threads, stop, results),
        )
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    try:
        assert [kind for kind, _ in collect(results, processes_count)] == ["ready"] * 2
        time.sleep(0.3)  # the crowds are calling
        opener = CircuitBreaker(name, config(), storage=storage)
        before = time.monotonic()
        opener.transition_to_open()
        after = time.monotonic()
        time.sleep(0.3)
        stop.set()
        reports = [starts for _, starts in collect(results, processes_count)]
    finally:
        stop.set()
        for process in processes:
            process.join(PATIENCE)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * processes_count
    for starts in reports:
        assert any(start < before for start in starts)  # it was busy before the opening
        # Begun after the opening had certainly happened: from a stale view, so bounded.
        assert sum(start > after for start in starts) <= max_calls
