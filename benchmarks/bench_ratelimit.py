"""Per-decision cost of in-memory rate limiting: sergas_guard vs limits 5.x vs pyrate-limiter.

Run:  python -m benchmarks.bench_ratelimit [--quick]

Everything is measured in one run on one machine and reported as µs per decision
and as ratios, because absolute figures on a shared machine are noisy. Each case
is timed as the best of several repeats of a tight loop. Scenarios:

* hot key:   one key at 1000/second (mostly rejections after the first thousand)
* 10k keys:  10,000 live keys in rotation (mostly admissions, state per key)

sergas_guard is measured at the storage level (what a middleware calls: one
decision returning the full RateLimitResult) and through RateLimiter.hit (the
public API, with key building and metrics), sync and async. limits is measured
with hit() alone and with hit() + get_window_stats(), which is what it needs to
produce the same remaining/reset figures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from sergas_guard.ratelimit import RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.storage import LimitCheck, MemoryStorage

RATE = "1000/second"
KEYS = 10_000


def timed(run: Callable[[int], None], iterations: int, repeats: int) -> float:
    """Best µs per iteration over ``repeats`` runs of ``run(iterations)``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(iterations)
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e6


def timed_async(run: Callable[[int], Awaitable[None]], iterations: int, repeats: int) -> float:
    async def main() -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            await run(iterations)
            best = min(best, time.perf_counter() - started)
        return best / iterations * 1e6

    return asyncio.run(main())


def key_names(count: int) -> list[str]:
    return [f"client-{i}" for i in range(count)]


def ours_storage(strategy: RateLimitStrategy, keys: list[str]) -> Callable[[int], None]:
    storage = MemoryStorage(max_keys=len(keys) * 2)
    spec = RateLimitConfig(rate=RATE, strategy=strategy).specs()[0]
    checks = [[LimitCheck(key, spec)] for key in keys]
    count = len(checks)

    def run(n: int) -> None:
        decide = storage.decide_sync
        for i in range(n):
            decide(checks[i % count], 1)

    return run


def ours_limiter(strategy: RateLimitStrategy, keys: list[str]) -> Callable[[int], None]:
    limiter = RateLimiter(RATE, MemoryStorage(max_keys=len(keys) * 2), strategy=strategy)
    count = len(keys)

    def run(n: int) -> None:
        hit = limiter.hit_sync
        for i in range(n):
            hit(keys[i % count])

    return run


def ours_limiter_async(strategy: RateLimitStrategy, keys: list[str]) -> Callable[[int], Awaitable[None]]:
    limiter = RateLimiter(RATE, MemoryStorage(max_keys=len(keys) * 2), strategy=strategy)
    count = len(keys)

    async def run(n: int) -> None:
        hit = limiter.hit
        for i in range(n):
            await hit(keys[i % count])

    return run


def limits_sync(kind: str, keys: list[str], stats: bool) -> Callable[[int], None]:
    from limits import parse
    from limits.storage import MemoryStorage as LimitsMemory
    from limits.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    classes = {
        "fixed": FixedWindowRateLimiter,
        "moving": MovingWindowRateLimiter,
        "sliding-counter": SlidingWindowCounterRateLimiter,
    }
    limiter = classes[kind](LimitsMemory())
    item = parse(RATE)
    count = len(keys)

    def run(n: int) -> None:
        hit = limiter.hit
        window = limiter.get_window_stats
        for i in range(n):
            key = keys[i % count]
            hit(item, key)
            if stats:
                window(item, key)

    return run


def limits_async(kind: str, keys: list[str]) -> Callable[[int], Awaitable[None]]:
    from limits import parse
    from limits.aio.storage import MemoryStorage as LimitsAsyncMemory
    from limits.aio.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    classes = {
        "fixed": FixedWindowRateLimiter,
        "moving": MovingWindowRateLimiter,
        "sliding-counter": SlidingWindowCounterRateLimiter,
    }
    limiter = classes[kind](LimitsAsyncMemory())
    item = parse(RATE)
    count = len(keys)

    async def run(n: int) -> None:
        hit = limiter.hit
        for i in range(n):
            await hit(item, keys[i % count])

    return run


def pyrate(keys: list[str]) -> Callable[[int], None]:
    from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

    # pyrate-limiter's in-memory bucket is one bucket; keys share it by name.
    limiter = Limiter(InMemoryBucket([Rate(1000, Duration.SECOND)]))
    count = len(keys)

    def run(n: int) -> None:
        acquire = limiter.try_acquire
        for i in range(n):
            acquire(keys[i % count], blocking=False)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    iterations = 20_000 if args.quick else 200_000
    repeats = 2 if args.quick else 5

    rows: list[tuple[str, str, str, float]] = []
    for scenario, keys in (("hot key", key_names(1)), ("10k keys", key_names(KEYS))):
        # Warm the 10k-key cases so every key is live before timing.
        def add(name: str, face: str, micros: float) -> None:
            rows.append((scenario, name, face, micros))

        for strategy in RateLimitStrategy:
            run = ours_storage(strategy, keys)
            run(len(keys))
            add(f"sergas_guard storage {strategy.value}", "sync", timed(run, iterations, repeats))
        for strategy in (RateLimitStrategy.SLIDING_WINDOW, RateLimitStrategy.TOKEN_BUCKET):
            run = ours_limiter(strategy, keys)
            run(len(keys))
            add(f"sergas_guard RateLimiter.hit {strategy.value}", "sync", timed(run, iterations, repeats))
            arun = ours_limiter_async(strategy, keys)
            add(f"sergas_guard RateLimiter.hit {strategy.value}", "async", timed_async(arun, iterations, repeats))
        for kind in ("fixed", "moving", "sliding-counter"):
            run = limits_sync(kind, keys, stats=False)
            run(len(keys))
            add(f"limits {kind}", "sync", timed(run, iterations, repeats))
            run = limits_sync(kind, keys, stats=True)
            add(f"limits {kind} + window stats", "sync", timed(run, iterations, repeats))
            arun = limits_async(kind, keys)
            add(f"limits {kind}", "async", timed_async(arun, iterations, repeats))
        run = pyrate(keys)
        add("pyrate-limiter InMemoryBucket", "sync", timed(run, iterations // 4, repeats))

    for scenario in ("hot key", "10k keys"):
        subset = [row for row in rows if row[0] == scenario]
        moving = next(m for s, n, f, m in subset if n == "limits moving" and f == "sync")
        fixed = next(m for s, n, f, m in subset if n == "limits fixed" and f == "sync")
        moving_async = next(m for s, n, f, m in subset if n == "limits moving" and f == "async")
        print(f"\n## {scenario} ({RATE}; best of {repeats} x {iterations:,} decisions)\n")
        print("| implementation | face | µs/decision | vs limits moving | vs limits fixed |")
        print("| --- | --- | ---: | ---: | ---: |")
        for _, name, face, micros in subset:
            base_moving = moving_async if face == "async" else moving
            print(
                f"| {name} | {face} | {micros:.2f} | {base_moving / micros:.2f}x faster"
                f" | {fixed / micros:.2f}x |"
            )


if __name__ == "__main__":
    main()
