"""QueueManager side by side with a plain asyncio.Queue + N workers, in one run.

Two measurements:

* **Per-item overhead.** Items that do nothing (``async def: return``) go through
  ``enqueue`` and a pool of 10 workers, in closed batches of 200 (the producer waits for
  a batch before the next, so no standing queue forms and CoDel never drops); the same
  through an ``asyncio.Queue`` with 10 workers. Reported per item and as a ratio, best of
  several rounds, the contenders taking turns round by round. Ours is measured with the
  seed's ``timeout=30.0`` (a deadline per item) and with ``timeout=None``.
* **Overload.** A service of 10 workers whose items take 10 ms (capacity 1000/s) is
  offered work at 2x capacity, open loop (arrivals do not wait for completions), for
  ``--seconds`` (30 by default). Reported for each contender: goodput (items completed
  per second, as a share of capacity), and the p50 / p99 / max latency from arrival to
  completion of the items it admitted, next to the p99 of the same contender offered
  half its capacity (unloaded). Contenders: ours with its defaults (CoDel 5 ms / 100 ms,
  adaptive LIFO, max_size 1000), ours as a plain bounded FIFO (``codel=False``,
  ``adaptive_lifo=False``), and the unbounded ``asyncio.Queue`` FIFO baseline.

Run: ``.venv/bin/python -m benchmarks.bench_queueing [--seconds 30] [--quick]``
(``--quick``: 3 s of overload and fewer rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sergas_guard.queueing import QueueManager

WORKERS = 10
SERVICE_SECONDS = 0.010
CAPACITY = WORKERS / SERVICE_SECONDS  # items per second
BATCH = 200


# -- per-item overhead ---------------------------------------------------------------------


async def plain_queue_run(items: int, yields: bool) -> float:
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    finished = 0
    batch_done = asyncio.Event()

    async def work() -> None:
        nonlocal finished
        if yields:
            await asyncio.sleep(0)
        finished += 1
        if finished % BATCH == 0:
            batch_done.set()

    async def worker() -> None:
        while True:
            fn = await queue.get()
            with contextlib.suppress(Exception):  # the pool survives, as ours does
                await fn()

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    started = time.perf_counter()
    for _ in range(items // BATCH):
        batch_done.clear()
        for _ in range(BATCH):
            queue.put_nowait(work)
        await batch_done.wait()
    elapsed = time.perf_counter() - started
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return elapsed


async def queue_manager_run(items: int, yields: bool, deadline: float | None) -> float:
    queue = QueueManager("bench", max_size=10_000, max_workers=WORKERS, timeout=deadline)
    await queue.start()
    finished = 0
    batch_done = asyncio.Event()

    async def work() -> None:
        nonlocal finished
        if yields:
            await asyncio.sleep(0)
        finished += 1
        if finished % BATCH == 0:
            batch_done.set()

    started = time.perf_counter()
    for _ in range(items // BATCH):
        batch_done.clear()
        for _ in range(BATCH):
            await queue.enqueue(work)
        # a bounded wait: were an item ever dropped, the batch would never complete
        await asyncio.wait_for(batch_done.wait(), 30)
    elapsed = time.perf_counter() - started
    await queue.stop()
    assert queue.get_metrics()["processed"] == items // BATCH * BATCH
    return elapsed


def overhead(items: int, rounds: int, yields: bool) -> None:
    contenders: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        "asyncio.Queue + 10 workers": lambda: plain_queue_run(items, yields),
        "QueueManager timeout=None": lambda: queue_manager_run(items, yields, None),
        "QueueManager timeout=30.0": lambda: queue_manager_run(items, yields, 30.0),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, run in contenders.items():
            best[name] = min(best[name], asyncio.run(run()))
    baseline = best["asyncio.Queue + 10 workers"]
    kind = "items that yield once (await asyncio.sleep(0))" if yields else "no-op items"
    print(f"per-item cost, {items} {kind}, best of {rounds} rounds")
    print(f"  {'contender':32} {'us/item':>9} {'ratio':>7}")
    for name, seconds in best.items():
        print(f"  {name:32} {seconds / items * 1e6:9.2f} {seconds / baseline:7.2f}x")


# -- overload ------------------------------------------------------------------------------


class Load:
    """Open-loop arrivals at ``rate`` per second for ``seconds``; latencies of completions."""

    def __init__(self, rate: float, seconds: float) -> None:
        self.rate = rate
        self.seconds = seconds
        self.latencies: list[float] = []
        self.offered = 0
        self.admitted = 0

    def item(self, arrived: float) -> Callable[[], Awaitable[None]]:
        async def serve() -> None:
            await asyncio.sleep(SERVICE_SECONDS)
            self.latencies.append(time.perf_counter() - arrived)

        return serve

    async def drive(
        self, offer: Callable[[Callable[[], Awaitable[None]]], Awaitable[bool]]
    ) -> float:
        """Offer items on schedule; returns the measured duration."""
        started = time.perf_counter()
        while True:
            now = time.perf_counter()
            elapsed = now - started
            if elapsed >= self.seconds:
                return elapsed
            due = int(elapsed * self.rate)
            while self.offered < due:
                self.offered += 1
                self.admitted += await offer(self.item(now))
            await asyncio.sleep(0.0005)


async def overload_ours(rate: float, seconds: float, **options: Any) -> tuple[Load, float]:
    queue = QueueManager("bench", max_size=1000, max_workers=WORKERS, timeout=None, **options)
    await queue.start()
    load = Load(rate, seconds)

    async def offer(fn: Callable[[], Awaitable[None]]) -> bool:
        return await queue.enqueue(fn)

    elapsed = await load.drive(offer)
    done_in_time = len(load.latencies)
    await queue.stop(drain=False, deadline=1.0)
    return load, done_in_time / elapsed


async def overload_plain(rate: float, seconds: float) -> tuple[Load, float]:
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            fn = await queue.get()
            await fn()

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    load = Load(rate, seconds)

    async def offer(fn: Callable[[], Awaitable[None]]) -> bool:
        queue.put_nowait(fn)
        return True

    elapsed = await load.drive(offer)
    done_in_time = len(load.latencies)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return load, done_in_time / elapsed


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def overload(seconds: float, unloaded_seconds: float) -> None:
    contenders: dict[str, Callable[[float, float], Coroutine[Any, Any, tuple[Load, float]]]] = {
        "QueueManager (CoDel + LIFO)": lambda r, s: overload_ours(r, s),
        "QueueManager as bounded FIFO": lambda r, s: overload_ours(
            r, s, codel=False, adaptive_lifo=False
        ),
        "asyncio.Queue FIFO (unbounded)": overload_plain,
    }
    print(
        f"\noverload: {WORKERS} workers x {SERVICE_SECONDS * 1000:.0f} ms "
        f"(capacity {CAPACITY:.0f}/s) offered 2x for {seconds:g} s; unloaded = 0.5x "
        f"for {unloaded_seconds:g} s"
    )
    print(
        f"  {'contender':32} {'goodput':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}"
        f" {'unloaded p99':>13} {'p99 ratio':>10}"
    )
    for name, run in contenders.items():
        unloaded, _ = asyncio.run(run(CAPACITY * 0.5, unloaded_seconds))
        loaded, goodput = asyncio.run(run(CAPACITY * 2.0, seconds))
        base_p99 = percentile(unloaded.latencies, 0.99)
        p99 = percentile(loaded.latencies, 0.99)
        print(
            f"  {name:32} {goodput / CAPACITY:7.0%} {percentile(loaded.latencies, 0.5) * 1e3:8.1f}"
            f" {p99 * 1e3:8.1f} {max(loaded.latencies) * 1e3:9.1f}"
            f" {base_p99 * 1e3:10.1f} ms {p99 / base_p99:9.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="overload duration")
    parser.add_argument("--items", type=int, default=20_000, help="items per overhead round")
    parser.add_argument("--rounds", type=int, default=7, help="overhead rounds")
    parser.add_argument("--quick", action="store_true", help="3 s of overload, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 3
    overhead(args.items, args.rounds, yields=False)
    overhead(args.items, args.rounds, yields=True)
    overload(args.seconds, min(args.seconds, 5.0))


if __name__ == "__main__":
    main()
