"""ThreadedQueueManager: the same core for threaded code, with real threads and clocks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from sergas_guard.errors import ConfigurationError, QueueItemRejected, QueueItemTimeout
from sergas_guard.queueing import FixedLimit, ThreadedQueueManager


def test_results_exceptions_and_a_pool_that_survives_failures() -> None:
    queue = ThreadedQueueManager("threads", max_workers=4)
    queue.start()

    def boom() -> None:
        raise ValueError("boom")

    failures = [queue.submit(boom) for _ in range(5)]
    results = [queue.submit(pow, n, 2) for n in range(10)]
    for future in failures:
        with pytest.raises(ValueError, match="boom"):
            future.result(timeout=5)
    assert [future.result(timeout=5) for future in results] == [n * n for n in range(10)]
    assert queue.stop() == []
    metrics = queue.get_metrics()
    assert (metrics["processed"], metrics["failed"]) == (10, 5)
    assert queue.core.unaccounted() == 0


def test_concurrent_producers_never_lose_an_item() -> None:
    queue = ThreadedQueueManager("producers", max_size=50, max_workers=3, timeout=None)
    queue.start()
    done = []
    lock = threading.Lock()
    accepted = [0] * 4

    def work(item: int) -> None:
        time.sleep(0.0005)
        with lock:
            done.append(item)

    def produce(producer: int) -> None:
        for n in range(100):
            accepted[producer] += queue.enqueue(work, producer * 1000 + n)

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    queue.stop(drain=True)
    metrics = queue.get_metrics()
    assert (
        sum(accepted)
        == metrics["accepted"]
        == len(done) + metrics["rejected_count"] - metrics["rejected"].get("full", 0)
    )
    assert len(done) == len(set(done))
    assert queue.core.unaccounted() == 0


def test_enqueue_never_blocks_when_full_and_the_limit_caps_threads() -> None:
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1

    queue = ThreadedQueueManager(
        "capped", max_size=3, max_workers=6, timeout=None, limit=FixedLimit(2), codel=False
    )
    queue.start()
    accepted = sum(queue.enqueue(work) for _ in range(5))
    time.sleep(0.05)
    accepted += sum(queue.enqueue(work) for _ in range(5))
    started = time.perf_counter()
    assert queue.enqueue(work) is False
    assert time.perf_counter() - started < 0.05
    assert accepted == 5  # 2 running + 3 queued
    gate.set()
    queue.stop()
    assert peak == 2


def test_deadlines_cancellation_and_stop_hand_back() -> None:
    gate = threading.Event()
    queue = ThreadedQueueManager("stop", max_workers=1, timeout=0.05, codel=False)
    queue.start()
    slow = queue.submit(gate.wait, 0.2)
    time.sleep(0.02)
    named = queue.submit(time.sleep, 0, request_id="x")
    withdrawn = queue.submit(time.sleep, 0)
    assert queue.cancel("x") == 1
    assert withdrawn.cancel()
    with pytest.raises(QueueItemTimeout):
        slow.result(timeout=5)  # ran past its deadline: its late result is discarded
    with pytest.raises(CancelledError):
        named.result(timeout=5)
    queue.stop()
    metrics = queue.get_metrics()
    assert metrics["timed_out"] == 1
    assert metrics["rejected"] == {"cancelled": 2}
    assert queue.core.unaccounted() == 0

    later = ThreadedQueueManager("later", max_workers=1, timeout=None)
    later.start()
    later.submit(gate.wait, 0.3)
    time.sleep(0.02)
    queued = later.submit(time.sleep, 0, request_id="q")
    returned = later.stop(drain=True, deadline=0.05)
    assert [item.request_id for item in returned] == ["q"]
    with pytest.raises(QueueItemRejected, match="returned"):
        queued.result(timeout=1)
    with pytest.raises(QueueItemRejected, match="closed"):
        later.submit(time.sleep, 0)


def test_coroutine_functions_are_refused() -> None:
    async def job() -> None:
        return None

    queue = ThreadedQueueManager("sync-only")
    with pytest.raises(ConfigurationError) as caught:
        queue.enqueue(job)
    assert caught.value.field == "fn"
