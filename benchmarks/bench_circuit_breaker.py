"""Circuit breakers side by side: sergas_guard vs pybreaker and aiobreaker, in one run.

Measures, with the breaker CLOSED:

* the overhead a breaker adds to one protected call (sync: ours vs pybreaker; async:
  ours vs aiobreaker), as the best of several rounds minus an unprotected baseline;
  contenders take turns round by round, so a busy machine disturbs them alike;
* the throughput of 8 threads calling through one shared breaker, once with a trivial
  function and once with a function that waits 1 ms on I/O (where a breaker that holds
  its lock during the call, as pybreaker does, serialises the threads).

Run: ``.venv/bin/python benchmarks/bench_circuit_breaker.py [--calls N] [--redis-url URL]``.
With ``--redis-url`` the sync and async overhead of a Redis-shared breaker is added, and
a table of calls/s and Redis round trips per call (counted by the server, ``INFO
commandstats``) for a Redis-shared breaker: ours deciding from the last reply (one
round trip per call), ours asking before every call (``cache_state=False``, two, as
before), and pybreaker's ``CircuitRedisStorage``; sync in one thread, and async with
1 and with 20 tasks in flight, the contenders taking turns round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import aiobreaker
import pybreaker

from sergas_guard.circuit_breaker import CircuitBreaker, CircuitBreakerConfig

ROUNDS = 5
THREADS = 8


def work() -> int:
    return 1


async def async_work() -> int:
    return 1


def io_work() -> int:
    time.sleep(0.001)
    return 1


def best_seconds(*runs: Callable[[], None]) -> list[float]:
    """The fastest of ``ROUNDS`` timings of each run, the runs taking turns.

    Taking turns spreads the load of the rest of a shared machine fairly over the
    contenders; the best round is the one the machine disturbed least.
    """
    best = [float("inf")] * len(runs)
    for _ in range(ROUNDS):
        for index, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def sync_loop(call: Callable[[], Any], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            call()

    return run


def async_loop(call: Callable[[], Awaitable[Any]], calls: int) -> Callable[[], None]:
    async def body() -> None:
        for _ in range(calls):
            await call()

    return lambda: asyncio.run(body())


def ours(storage: Any = None) -> CircuitBreaker:
    return CircuitBreaker("bench", CircuitBreakerConfig(), storage=storage)


def overheads(calls: int, redis_url: str | None) -> list[tuple[str, str, float]]:
    """(face, contender, nanoseconds added per call)."""
    rows = []
    breaker = ours()
    decorated = breaker(work)
    py = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("sergas_guard call_sync", lambda: breaker.call_sync(work)),
        ("sergas_guard @decorator", decorated),
        ("pybreaker call", lambda: py.call(work)),
        ("pybreaker @decorator", py(work)),
    ]
    base, *timings = best_seconds(
        sync_loop(work, calls), *(sync_loop(call, calls) for _, call in contenders)
    )
    for (name, _), seconds in zip(contenders, timings, strict=True):
        rows.append(("sync", name, (seconds - base) / calls * 1e9))

    abreaker = ours()
    adecorated = abreaker(async_work)
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
    async_contenders: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("sergas_guard await call", lambda: abreaker.call(async_work)),
        ("sergas_guard @decorator", adecorated),
        ("aiobreaker call_async", lambda: aio.call_async(async_work)),
        ("aiobreaker @decorator", aio(async_work)),
    ]
    async_base, *timings = best_seconds(
        async_loop(async_work, calls), *(async_loop(acall, calls) for _, acall in async_contenders)
    )
    for (name, _), seconds in zip(async_contenders, timings, strict=True):
        rows.append(("async", name, (seconds - async_base) / calls * 1e9))

    if redis_url:
        from sergas_guard.ratelimit.stores.redis import RedisStorage

        shared = ours(RedisStorage(redis_url, socket_timeout=1.0, connect_timeout=1.0))
        shared.reset()
        few = max(100, calls // 50)
        (seconds,) = best_seconds(sync_loop(lambda: shared.call_sync(work), few))
        rows.append(("sync", "sergas_guard on Redis", (seconds - base * few / calls) / few * 1e9))
        seconds = asyncio.run(redis_async_best(redis_url, few))
        rows.append(
            ("async", "sergas_guard on Redis", (seconds - async_base * few / calls) / few * 1e9)
        )
    return rows


async def redis_async_best(redis_url: str, calls: int) -> float:
    """Best round of ``calls`` async calls through a Redis-shared breaker (one loop, one pool)."""
    from sergas_guard.ratelimit.stores.redis import RedisStorage

    storage = RedisStorage(redis_url, socket_timeout=1.0, connect_timeout=1.0)
    breaker = ours(storage)
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            await breaker.call(async_work)
        best = min(best, time.perf_counter() - started)
    await storage.aclose()
    return best


# Commands that are not the breaker's: the count's own, and a new connection's handshake.
_NOT_BREAKER = ("cmdstat_info", "cmdstat_config", "cmdstat_client", "cmdstat_hello")


_SCRIPTS = ("cmdstat_evalsha", "cmdstat_eval")


def redis_commands(client: Any) -> int:
    """Round trips the server answered since its statistics were reset, the breakers' only.

    The server counts the commands a script runs as well as the script; a contender
    that runs scripts sends nothing else, so its round trips are its script calls.
    """
    stats = client.info("commandstats")
    scripts = sum(int(stats[name]["calls"]) for name in _SCRIPTS if name in stats)
    if scripts:
        return scripts
    return sum(
        int(value["calls"]) for name, value in stats.items() if not name.startswith(_NOT_BREAKER)
    )


def round_trips_per_call(client: Any, run: Callable[[], None], calls: int) -> float:
    client.config_resetstat()
    run()
    return redis_commands(client) / calls


def over_redis(redis_url: str, calls: int) -> list[tuple[str, str, float, float]]:
    """(face, contender, calls/s, round trips per call) with the breakers CLOSED."""
    import redis

    from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
    from sergas_guard.ratelimit.stores.redis import RedisStorage

    counter = redis.Redis.from_url(redis_url)
    rows = []
    storages = [RedisStorage(redis_url, socket_timeout=1.0, connect_timeout=1.0) for _ in "ab"]
    cached = CircuitBreaker("bench-cached", CircuitBreakerConfig(), storage=storages[0])
    bare = CircuitBreaker(
        "bench-bare",
        CircuitBreakerConfig(),
        storage=RedisBreakerStore(storages[1], cache_state=False),
    )
    py = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=60,
        state_storage=pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis.Redis.from_url(redis_url), namespace="bench"
        ),
    )
    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("sergas_guard (last reply)", lambda: cached.call_sync(work)),
        ("sergas_guard (ask first)", lambda: bare.call_sync(work)),
        ("pybreaker Redis storage", lambda: py.call(work)),
    ]
    loops = [sync_loop(call, calls) for _, call in contenders]
    for (name, _), loop, seconds in zip(contenders, loops, best_seconds(*loops), strict=True):
        rows.append(("sync", name, calls / seconds, round_trips_per_call(counter, loop, calls)))
    for storage in storages:
        storage.close_sync()
    for tasks in (1, 20):
        rows += asyncio.run(async_over_redis(redis_url, calls, tasks, counter))
    counter.close()
    return rows


async def async_over_redis(
    redis_url: str, calls: int, tasks: int, counter: Any
) -> list[tuple[str, str, float, float]]:
    """Async rows: ``tasks`` tasks share ``calls`` calls, one loop, contenders taking turns."""
    from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
    from sergas_guard.ratelimit.stores.redis import RedisStorage

    storages = [RedisStorage(redis_url, socket_timeout=1.0, connect_timeout=1.0) for _ in "ab"]
    contenders = [
        (
            "sergas_guard (last reply)",
            CircuitBreaker("bench-acached", CircuitBreakerConfig(), storage=storages[0]),
        ),
        (
            "sergas_guard (ask first)",
            CircuitBreaker(
                "bench-abare",
                CircuitBreakerConfig(),
                storage=RedisBreakerStore(storages[1], cache_state=False),
            ),
        ),
    ]

    async def crowd(breaker: CircuitBreaker) -> None:
        async def one_task() -> None:
            for _ in range(calls // tasks):
                await breaker.call(async_work)

        await asyncio.gather(*(one_task() for _ in range(tasks)))

    best = [float("inf")] * len(contenders)
    for _ in range(ROUNDS):
        for index, (_, breaker) in enumerate(contenders):
            started = time.perf_counter()
            await crowd(breaker)
            best[index] = min(best[index], time.perf_counter() - started)
    rows = []
    done = calls // tasks * tasks
    for (name, breaker), seconds in zip(contenders, best, strict=True):
        counter.config_resetstat()
        await crowd(breaker)
        trips = redis_commands(counter) / done
        rows.append((f"async, {tasks} in flight", name, done / seconds, trips))
    for storage in storages:
        await storage.aclose()
    return rows


def threaded_throughput(fn: Callable[[], int], calls_per_thread: int) -> list[tuple[str, float]]:
    """(contender, calls per second) with THREADS threads through one breaker."""
    breaker = ours()
    py = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("unprotected", fn),
        ("sergas_guard", lambda: breaker.call_sync(fn)),
        ("pybreaker", lambda: py.call(fn)),
    ]

    def crowd(call: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with ThreadPoolExecutor(THREADS) as pool:
                loops = [pool.submit(sync_loop(call, calls_per_thread)) for _ in range(THREADS)]
                for loop in loops:
                    loop.result()

        return run

    timings = best_seconds(*(crowd(call) for _, call in contenders))
    return [
        (name, THREADS * calls_per_thread / seconds)
        for (name, _), seconds in zip(contenders, timings, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per overhead round")
    parser.add_argument("--redis-url", default=None, help="also measure a Redis-shared breaker")
    options = parser.parse_args()

    rows = overheads(options.calls, options.redis_url)
    print(f"Overhead per protected call, breaker closed (best of {ROUNDS} x {options.calls})")
    print(f"{'face':<6} {'contender':<26} {'ns/call':>10} {'vs ours':>12}")
    for face in ("sync", "async"):
        face_rows = [row for row in rows if row[0] == face]
        ours_ns = face_rows[0][2]
        for _, name, ns in face_rows:
            print(f"{face:<6} {name:<26} {ns:>10.0f} {ns / ours_ns:>11.2f}x")

    if options.redis_url:
        few = max(200, options.calls // 50)
        print(f"\nOver Redis, breaker closed ({few} calls per round, best of {ROUNDS})")
        print(f"{'face':<22} {'contender':<26} {'calls/s':>9} {'vs ours':>8} {'trips/call':>11}")
        redis_rows = over_redis(options.redis_url, few)
        for face in dict.fromkeys(row[0] for row in redis_rows):
            redis_face_rows = [row for row in redis_rows if row[0] == face]
            ours_rate = redis_face_rows[0][2]
            for _, name, per_second, trips in redis_face_rows:
                print(
                    f"{face:<22} {name:<26} {per_second:>9.0f} "
                    f"{per_second / ours_rate:>7.2f}x {trips:>11.2f}"
                )

    for label, fn, calls in (
        ("trivial function", work, options.calls // 4),
        ("function waiting 1 ms on I/O", io_work, 200),
    ):
        results = threaded_throughput(fn, calls)
        ours_rate = dict(results)["sergas_guard"]
        print(f"\n{THREADS} threads through one breaker, {label} ({calls} calls per thread)")
        print(f"{'contender':<26} {'calls/s':>12} {'vs ours':>9}")
        for name, per_second in results:
            print(f"{name:<26} {per_second:>12.0f} {per_second / ours_rate:>8.2f}x")


if __name__ == "__main__":
    main()
