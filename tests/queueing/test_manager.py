"""QueueManager on a real event loop and real clocks: the seed's calls and every outcome."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sergas_guard.errors import ConfigurationError, GuardError, QueueItemRejected, QueueItemTimeout
from sergas_guard.queueing import AIMDLimit, FixedLimit, QueueManager

SEED_KEYS = {
    "name",
    "queue_size",
    "max_size",
    "utilization_percent",
    "active_workers",
    "processed_count",
    "failed_count",
    "timeout_count",
}


async def echo(value: str) -> str:
    await asyncio.sleep(0)
    return value


def accounted(queue: QueueManager) -> None:
    core = queue.core
    assert core.unaccounted() == 0, queue.get_metrics()


async def test_the_seed_snippet_runs_as_written() -> None:
    ran = []

    async def process_request() -> None:
        ran.append(True)

    queue = QueueManager(name="request_queue", max_size=1000, max_workers=10, timeout=30.0)
    await queue.start()
    success = await queue.enqueue(process_request, priority=0, request_id="123")
    assert success is True
    await queue.stop(drain=True)
    assert ran == [True]
    metrics = queue.get_metrics()
    assert metrics.keys() >= SEED_KEYS
    assert metrics["name"] == "request_queue"
    assert metrics["processed_count"] == 1
    assert metrics["max_size"] == 1000
    assert metrics["queue_size"] == 0


async def test_enqueue_returns_false_at_once_when_full() -> None:
    gate = asyncio.Event()
    queue = QueueManager("full", max_size=2, max_workers=1, timeout=None)
    await queue.start()
    assert await queue.enqueue(gate.wait)  # taken by the worker
    await asyncio.sleep(0)
    assert await queue.enqueue(gate.wait)
    assert await queue.enqueue(gate.wait)
    started = time.perf_counter()
    assert await queue.enqueue(gate.wait) is False
    assert time.perf_counter() - started < 0.05
    with pytest.raises(QueueItemRejected) as caught:
        queue.submit(gate.wait)
    assert caught.value.reason == "full"
    assert queue.get_metrics()["rejected"] == {"full": 2}
    gate.set()
    await queue.stop()
    assert queue.get_metrics()["processed"] == 3
    accounted(queue)


async def test_submit_hands_back_results_and_exceptions_and_the_pool_survives() -> None:
    queue = QueueManager("results", max_workers=2)
    await queue.start()

    async def double(value: int) -> int:
        return value * 2

    async def boom() -> None:
        raise ValueError("boom")

    failures = [queue.submit(boom) for _ in range(5)]
    for handle in failures:
        with pytest.raises(ValueError, match="boom"):
            await handle
    assert [await queue.submit(double, n) for n in range(5)] == [0, 2, 4, 6, 8]
    await queue.stop()
    metrics = queue.get_metrics()
    assert (metrics["processed"], metrics["failed"]) == (5, 5)
    accounted(queue)


async def test_plain_functions_run_in_a_thread_not_on_the_loop() -> None:
    queue = QueueManager("threads", max_workers=2)
    await queue.start()
    loop_thread = threading.get_ident()
    assert await queue.submit(threading.get_ident) != loop_thread
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    await queue.submit(time.sleep, 0.1)  # blocks its thread, not the loop
    ticker.cancel()
    assert ticks >= 5
    await queue.stop()


async def test_an_item_past_its_deadline_times_out_running_or_queued() -> None:
    queue = QueueManager("deadline", max_workers=1, timeout=0.05, codel=False)
    await queue.start()
    slow = queue.submit(asyncio.sleep, 1.0)
    behind = queue.submit(asyncio.sleep, 0)  # waits behind it past its own deadline
    with pytest.raises(QueueItemTimeout):
        await slow
    with pytest.raises(QueueItemTimeout):
        await behind
    await queue.stop()
    assert queue.get_metrics()["timed_out"] == 2
    accounted(queue)


async def test_a_timeout_raised_by_the_item_itself_is_a_failure() -> None:
    queue = QueueManager("own-timeout", max_workers=1, timeout=10.0)
    await queue.start()

    async def gives_up() -> None:
        raise TimeoutError("upstream")

    with pytest.raises(TimeoutError, match="upstream"):
        await queue.submit(gives_up)
    await queue.stop()
    assert queue.get_metrics()["failed"] == 1


async def test_cancel_removes_queued_items_and_interrupts_running_ones() -> None:
    queue = QueueManager("cancel", max_workers=1, timeout=None)
    await queue.start()
    running = queue.submit(asyncio.sleep, 10, request_id="a")
    queued = queue.submit(asyncio.sleep, 10, request_id="b")
    await asyncio.sleep(0.01)
    assert queue.cancel("b") == 1
    assert queue.cancel("a") == 1
    assert queue.cancel("nobody") == 0
    for handle in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await handle
    assert await queue.submit(echo, "worker still alive") == "worker still alive"
    await queue.stop()
    assert queue.get_metrics()["rejected"] == {"cancelled": 2}
    accounted(queue)


async def test_wait_for_timing_out_on_a_handle_cancels_the_item() -> None:
    queue = QueueManager("wait-for", max_workers=1, timeout=None)
    await queue.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.submit(asyncio.sleep, 10), 0.02)
    await asyncio.sleep(0)
    metrics = queue.get_metrics()
    assert metrics["in_flight"] == 0
    assert metrics["rejected"] == {"cancelled": 1}
    await queue.stop()


async def test_stop_drains_or_hands_back_and_never_loses_an_item() -> None:
    gate = asyncio.Event()
    queue = QueueManager("stop", max_workers=2, timeout=None)
    await queue.start()
    handles = [queue.submit(gate.wait, request_id=str(n)) for n in range(6)]
    await asyncio.sleep(0.01)
    returned = await queue.stop(drain=False, deadline=0.05)
    # two were running and were cancelled at the deadline; four were handed back
    assert [item.request_id for item in returned] == ["2", "3", "4", "5"]
    assert all(item.fn == gate.wait for item in returned)
    for handle in handles[2:]:
        with pytest.raises(QueueItemRejected, match="returned"):
            await handle
    for handle in handles[:2]:
        with pytest.raises(QueueItemRejected, match="stopped"):
            await handle
    metrics = queue.get_metrics()
    assert metrics["returned"] == 4
    assert metrics["rejected"] == {"stopped": 2}
    assert await queue.enqueue(gate.wait) is False  # closed
    assert await queue.stop() == []
    with pytest.raises(GuardError):
        await queue.start()
    accounted(queue)


async def test_stop_with_drain_runs_what_is_queued() -> None:
    queue = QueueManager("drain", max_workers=2, timeout=None)
    await queue.start()
    done = []

    async def work(n: int) -> None:
        await asyncio.sleep(0.001)
        done.append(n)

    for n in range(20):
        assert await queue.enqueue(work, n)
    assert await queue.stop(drain=True) == []
    assert sorted(done) == list(range(20))


async def test_items_queued_before_start_run_after_it() -> None:
    queue = QueueManager("early", max_workers=1)
    handle = queue.submit(echo, "ran")
    await queue.start()
    assert await handle == "ran"
    await queue.stop()


async def test_lower_priority_numbers_run_first() -> None:
    queue = QueueManager("priority", max_workers=1, timeout=None, codel=False)
    order: list[int] = []

    async def note(priority: int) -> None:
        order.append(priority)

    for priority in (5, 1, 3, 0, 4, 2):
        await queue.enqueue(note, priority, priority=priority)
    await queue.start()
    await queue.stop()
    assert order == [0, 1, 2, 3, 4, 5]


async def test_running_items_never_exceed_the_policy_limit() -> None:
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1

    queue = QueueManager("limit", max_workers=8, timeout=None, limit=FixedLimit(3), codel=False)
    await queue.start()
    for _ in range(40):
        await queue.enqueue(work)
    await queue.stop()
    assert peak == 3
    assert queue.get_metrics()["limit"] == 3


async def test_an_adaptive_limit_backs_off_when_items_time_out() -> None:
    policy = AIMDLimit(initial_limit=8, min_limit=1, max_limit=8, timeout=10.0)
    queue = QueueManager("aimd", max_workers=8, timeout=0.02, limit=policy, codel=False)
    await queue.start()
    handles = [queue.submit(asyncio.sleep, 1) for _ in range(8)]
    await asyncio.gather(*handles, return_exceptions=True)
    assert queue.get_metrics()["limit"] < 8  # eight drops: 8 * 0.9^8 = 3.4
    await queue.stop()


async def test_codel_sheds_a_standing_queue_and_keeps_admitted_latency_low() -> None:
    queue = QueueManager("codel", max_size=10_000, max_workers=2, timeout=None)
    await queue.start()
    handles = []
    for _ in range(100):  # 2 workers, 2 ms each: ~100 ms of work arrives at once
        handles.append(queue.submit(asyncio.sleep, 0.002))
    await asyncio.sleep(0.25)
    for _ in range(40):  # and keeps arriving faster than it is served
        handles.append(queue.submit(asyncio.sleep, 0.002))
        await asyncio.sleep(0.0005)
    results = await asyncio.gather(*handles, return_exceptions=True)
    dropped = [r for r in results if isinstance(r, QueueItemRejected)]
    assert dropped
    assert all(r.reason == "queue_delay" for r in dropped)
    metrics = queue.get_metrics()
    assert metrics["rejected"]["queue_delay"] == len(dropped)
    await queue.stop()
    accounted(queue)


async def test_metrics_report_depth_limit_and_percentiles() -> None:
    gate = asyncio.Event()
    queue = QueueManager("metrics", max_size=10, max_workers=2, timeout=None)
    await queue.start()
    for _ in range(5):
        await queue.enqueue(gate.wait)
    await asyncio.sleep(0.01)
    metrics = queue.get_metrics()
    assert (metrics["depth"], metrics["in_flight"], metrics["active_workers"]) == (3, 2, 2)
    assert metrics["utilization"] == pytest.approx(0.3)
    assert metrics["utilization_percent"] == 30
    assert metrics["limit"] == 2
    assert metrics["capacity"] == 10
    assert metrics["seconds_since_empty"] >= 0.01
    gate.set()
    await queue.stop()
    metrics = queue.get_metrics()
    assert metrics["service_time_p99"] >= metrics["service_time_p50"] > 0
    assert metrics["time_in_queue_p99"] >= 0.01  # the three that waited for the gate


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_workers": 0}, "max_workers"),
        ({"timeout": -1}, "timeout"),
        ({"limit": "lifo"}, "limit"),
        ({"target_delay": 1.0}, "target_delay"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {"name": "bad", **kwargs}
    with pytest.raises(ConfigurationError) as caught:
        QueueManager(**settings)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_bad_items_are_refused_naming_the_field() -> None:
    queue = QueueManager("bad-items")
    with pytest.raises(ConfigurationError) as caught:
        await queue.enqueue("not a function")  # type: ignore[arg-type]
    assert caught.value.field == "fn"
    with pytest.raises(ConfigurationError) as caught:
        await queue.enqueue(time.sleep, 0, priority=1.5)  # type: ignore[arg-type]
    assert caught.value.field == "priority"


async def test_a_plain_function_past_its_deadline_times_out_and_frees_the_worker() -> None:
    queue = QueueManager("thread-deadline", max_workers=1, timeout=0.05, codel=False)
    await queue.start()
    started = time.perf_counter()
    with pytest.raises(QueueItemTimeout):
        await queue.submit(time.sleep, 0.5)  # the thread sleeps on; its result is discarded
    assert time.perf_counter() - started < 0.4
    assert await queue.submit(echo, "next") == "next"
    await queue.stop()
    assert queue.get_metrics()["timed_out"] == 1


async def test_an_older_deadline_starting_later_is_still_enforced_on_time() -> None:
    # One watchdog timer serves the pool: an item whose deadline is earlier than the one
    # the timer is armed for (it waited at a lower priority) must re-arm it.
    queue = QueueManager("watchdog", max_workers=2, timeout=0.3, codel=False)
    origin = time.perf_counter()
    older = queue.submit(asyncio.sleep, 5, priority=1)  # deadline origin + 0.3
    await asyncio.sleep(0.1)
    newer = queue.submit(asyncio.sleep, 5, priority=0)  # deadline origin + 0.4, starts first
    await queue.start()
    with pytest.raises(QueueItemTimeout):
        await older
    assert time.perf_counter() - origin < 0.38
    with pytest.raises(QueueItemTimeout):
        await newer
    await queue.stop()


async def test_two_stops_at_once_hand_each_item_back_once() -> None:
    gate = asyncio.Event()
    queue = QueueManager("two-stops", max_workers=1, timeout=None)
    await queue.start()
    for n in range(4):
        await queue.enqueue(gate.wait, request_id=str(n))
    await asyncio.sleep(0.01)
    first, second = await asyncio.gather(
        queue.stop(drain=False, deadline=0.05), queue.stop(drain=False, deadline=0.05)
    )
    assert sorted(item.request_id or "" for item in first + second) == ["1", "2", "3"]
    assert queue.get_metrics()["returned"] == 3
    assert queue.core.unaccounted() == 0
