"""The cold-start burst of issue 14, shared by its test and its benchmark.

Several freshly started processes build a limiter with default settings on one
redis-server, wait at a barrier, then each fire ``concurrency`` concurrent ``hit("k")``
at one limit; two CPU-bound processes run beside them, as on a busy host. Each worker
reports what it admitted and what reached its caller as an exception.

Workers are started with the ``spawn`` method: a new interpreter with no connection,
no imported module and no state inherited from the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from typing import Any

LIMIT = 100
RATE = f"{LIMIT}/hour"
STRATEGIES = ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "leaky_bucket")
# Strategies limits has, by our name.
LIMITS_STRATEGIES = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
}


@dataclass
class Outcome:
    """One process's share of a burst."""

    admitted: int = 0
    rejected: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    storage: dict[str, Any] = field(default_factory=dict)
    #: Seconds from the barrier to the slowest decision's answer.
    slowest: float = 0.0
    #: What closing the limiter raised, if anything.
    close_error: str = ""


@dataclass
class Burst:
    """All processes' outcomes of one burst."""

    outcomes: list[Outcome]

    @property
    def admitted(self) -> int:
        return sum(o.admitted for o in self.outcomes)

    @property
    def exceptions(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for outcome in self.outcomes:
            total.update(outcome.exceptions)
        return total

    @property
    def slowest(self) -> float:
        return max(o.slowest for o in self.outcomes)

    @property
    def results(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for outcome in self.outcomes:
            total.update(outcome.results)
        return total


Hit = Callable[[], Awaitable[tuple[bool, str]]]


# The settings that were the defaults before issue 14 (for the benchmark's comparison).
PREVIOUS_DEFAULTS: dict[str, Any] = {
    "storage": {"connect_timeout": 0.05, "socket_timeout": 0.05},
    "failover": {"failure_threshold": 3, "fallback_share": 1.0},
}


def _ours(url: str, name: str, strategy: str, previous: bool = False) -> tuple[Hit, Any]:
    from sergas_guard.ratelimit import RateLimiter
    from sergas_guard.storage import storage_from_url

    storage_options = PREVIOUS_DEFAULTS["storage"] if previous else {}
    failover_options = PREVIOUS_DEFAULTS["failover"] if previous else {}
    # The leaky bucket's burst is 1 by default; a burst of the limit makes every
    # strategy's exact answer the same: LIMIT admitted.
    burst = LIMIT if strategy == "leaky_bucket" else None
    limiter = RateLimiter(
        RATE,
        storage_from_url(url, **storage_options),
        name=name,
        strategy=strategy,
        burst=burst,
        **failover_options,
    )

    async def hit() -> tuple[bool, str]:
        result = await limiter.hit("k")
        return result.allowed, type(result).__name__

    return hit, limiter


def _limits(url: str, name: str, strategy: str) -> tuple[Hit, Any]:
    import limits
    import limits.aio.storage
    import limits.aio.strategies

    # redis-py, as our storage uses (limits' default async driver is coredis).
    kind = (
        limits.aio.storage.RedisClusterStorage
        if url.startswith("redis+cluster://")
        else limits.aio.storage.RedisStorage
    )
    storage = kind("async+" + url, implementation="redispy")
    limiter = getattr(limits.aio.strategies, LIMITS_STRATEGIES[strategy])(storage)
    item = limits.parse(RATE)

    async def hit() -> tuple[bool, str]:
        return bool(await limiter.hit(item, name, "k")), "limits"

    return hit, None


def _sync_burst(limiter: Any, concurrency: int, barrier: Barrier) -> Outcome:
    """The sync face: ``concurrency`` threads released together, one ``hit_sync`` each."""
    import threading

    outcome = Outcome()
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)
    started = 0.0

    def one() -> None:
        ready.wait()
        try:
            result = limiter.hit_sync("k")
        except Exception as exc:  # what reached the caller: counted, not raised
            with lock:
                outcome.exceptions[f"{type(exc).__name__}: {exc}"[:120]] += 1
            return
        finally:
            with lock:
                outcome.slowest = max(outcome.slowest, time.monotonic() - started)
        with lock:
            outcome.admitted += result.allowed
            outcome.rejected += not result.allowed
            outcome.results[type(result).__name__] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()  # every process has its threads waiting: fire together
    started = time.monotonic()
    ready.wait()
    for thread in threads:
        thread.join()
    outcome.storage = limiter.get_metrics(detailed=True).get("storage", {})
    try:
        limiter.close()
    except Exception as exc:  # closing is not part of the burst: reported apart
        outcome.close_error = f"{type(exc).__name__}: {exc}"[:120]
    return outcome


def _worker(
    contender: str,
    url: str,
    name: str,
    strategy: str,
    concurrency: int,
    barrier: Barrier,
    results: Any,
) -> None:
    if contender == "sync":
        _, limiter = _ours(url, name, strategy)
        try:
            results.put(_sync_burst(limiter, concurrency, barrier))
        except BaseException as exc:  # the parent must hear of it, not wait for a timeout
            results.put(Outcome(exceptions=Counter({f"worker: {type(exc).__name__}: {exc}": 1})))
            raise
        return
    if contender == "limits":
        hit, limiter = _limits(url, name, strategy)
    else:
        hit, limiter = _ours(url, name, strategy, previous=contender == "previous")

    async def main() -> Outcome:
        outcome = Outcome()
        barrier.wait()  # every process is ready: fire together
        started = time.monotonic()

        async def timed() -> tuple[bool, str]:
            try:
                return await hit()
            finally:
                outcome.slowest = max(outcome.slowest, time.monotonic() - started)

        replies = await asyncio.gather(
            *(timed() for _ in range(concurrency)), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                outcome.exceptions[f"{type(reply).__name__}: {reply}"[:120]] += 1
                continue
            allowed, kind = reply
            outcome.admitted += allowed
            outcome.rejected += not allowed
            outcome.results[kind] += 1
        if limiter is not None:
            outcome.storage = limiter.get_metrics(detailed=True).get("storage", {})
            try:
                await limiter.aclose()
            except Exception as exc:  # closing is not part of the burst: reported apart
                outcome.close_error = f"{type(exc).__name__}: {exc}"[:120]
        return outcome

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:  # the parent must hear of it, not wait for a timeout
        results.put(Outcome(exceptions=Counter({f"worker: {type(exc).__name__}: {exc}": 1})))
        raise


def _hog(stop: Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def cpu_hogs(count: int = 2) -> Iterator[None]:
    """``count`` processes burning CPU until the block ends (a busy host)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    hogs = [context.Process(target=_hog, args=(stop,), daemon=True) for _ in range(count)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        stop.set()
        for hog in hogs:
            hog.join(10)
            if hog.is_alive():
                hog.kill()


def burst(
    url: str,
    *,
    name: str,
    strategy: str,
    processes: int = 4,
    concurrency: int = 100,
    contender: str = "ours",
    timeout: float = 120.0,
) -> Burst:
    """Run one burst in ``processes`` freshly spawned processes; their outcomes.

    ``contender``: "ours" (our limiter, default settings, ``await hit``), "sync" (the
    same limiter's sync face, ``concurrency`` threads per process), "previous" (ours
    with the defaults before issue 14) or "limits" (limits' asyncio Redis storage)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    queue = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(contender, url, name, strategy, concurrency, barrier, queue),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    try:
        outcomes = [queue.get(timeout=max(0.1, deadline - time.monotonic())) for _ in workers]
    finally:
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
    return Burst(outcomes)


def _outage_worker(
    url: str,
    name: str,
    rate: str,
    processes: int,
    before: int,
    during: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """Admit ``before`` on "k" with Redis up, wait to see every peer, then (after the
    parent stopped Redis) fire ``during`` concurrent hits on "k"."""
    from sergas_guard.ratelimit import RateLimiter
    from sergas_guard.storage import FailoverStorage, storage_from_url

    async def main() -> dict[str, Any]:
        limiter = RateLimiter(rate, storage_from_url(url), name=name)
        failover = limiter.storage
        assert isinstance(failover, FailoverStorage)
        assert failover.peers is not None
        admitted_before = sum([(await limiter.hit("k")).allowed for _ in range(before)])
        deadline = time.monotonic() + 30
        while failover.peers.count != processes and time.monotonic() < deadline:
            await limiter.hit("warm-up")  # heartbeats ride on successful decisions
            await asyncio.sleep(0.05)
        seen = failover.peers.count
        barrier.wait()  # every process knows its peers: the parent stops Redis
        barrier.wait()  # Redis is down
        replies = await asyncio.gather(
            *(limiter.hit("k") for _ in range(during)), return_exceptions=True
        )
        kinds = Counter(type(r).__name__ for r in replies)
        admitted = sum(1 for r in replies if not isinstance(r, BaseException) and r.allowed)
        metrics = limiter.get_metrics(detailed=True)["storage"]
        await limiter.aclose()
        return {
            "before": admitted_before,
            "during": admitted,
            "kinds": kinds,
            "peers_seen": seen,
            "metrics": metrics,
        }

    results.put(asyncio.run(main()))


def outage(
    server: Any,
    *,
    name: str,
    rate: str,
    processes: int,
    before: int,
    during: int,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """``processes`` spawned processes share a limit, then ``server`` stops under them."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    queue = context.Queue()
    args = (server.url, name, rate, processes, before, during, barrier, queue)
    workers = [
        context.Process(target=_outage_worker, args=args, daemon=True) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout)
        server.stop()
        barrier.wait(timeout)
        return [queue.get(timeout=timeout) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
