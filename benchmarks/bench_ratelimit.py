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
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sergas_guard.ratelimit import RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.storage import LimitCheck, MemoryStorage

RATE = "1000/second"
KEYS = 10_000


Runner = Callable[[int], None] | Callable[[int], Awaitable[None]]


def measure(
    loop: asyncio.AbstractEventLoop,
    cases: list[tuple[str, str, Runner]],
    iterations: int,
    rounds: int,
) -> dict[str, float]:
    """Best µs per decision of each case, measured in interleaved rounds.

    Every round times each case once, in turn, so a burst of noise from other
    processes on this shared machine hits all cases alike; the best round of each
    case is its figure.
    """
    best = {f"{name}|{face}": float("inf") for name, face, _ in cases}
    for _ in range(rounds):
        for name, face, run in cases:
            started = time.perf_counter()
            outcome = run(iterations)
            if outcome is not None:
                loop.run_until_complete(outcome)
            elapsed = (time.perf_counter() - started) / iterations * 1e6
            label = f"{name}|{face}"
            best[label] = min(best[label], elapsed)
    return best


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


def ours_storage_async(
    strategy: RateLimitStrategy, keys: list[str]
) -> Callable[[int], Awaitable[None]]:
    storage = MemoryStorage(max_keys=len(keys) * 2)
    spec = RateLimitConfig(rate=RATE, strategy=strategy).specs()[0]
    checks = [[LimitCheck(key, spec)] for key in keys]
    count = len(checks)

    async def run(n: int) -> None:
        decide = storage.decide
        for i in range(n):
            await decide(checks[i % count], 1)

    return run


def ours_limiter(strategy: RateLimitStrategy, keys: list[str]) -> Callable[[int], None]:
    limiter = RateLimiter(RATE, MemoryStorage(max_keys=len(keys) * 2), strategy=strategy)
    count = len(keys)

    def run(n: int) -> None:
        hit = limiter.hit_sync
        for i in range(n):
            hit(keys[i % count])

    return run


def ours_limiter_async(
    strategy: RateLimitStrategy, keys: list[str]
) -> Callable[[int], Awaitable[None]]:
    limiter = RateLimiter(RATE, MemoryStorage(max_keys=len(keys) * 2), strategy=strategy)
    count = len(keys)

    async def run(n: int) -> None:
        hit = limiter.hit
        for i in range(n):
            await hit(keys[i % count])

    return run


LIMITS_CLASSES = {
    "fixed": "FixedWindowRateLimiter",
    "moving": "MovingWindowRateLimiter",
    "sliding-counter": "SlidingWindowCounterRateLimiter",
}


def limits_limiter(kind: str, asynchronous: bool) -> Any:
    """A limits 5.x strategy of ``kind`` on its in-memory storage (sync or asyncio package)."""
    package = "limits.aio" if asynchronous else "limits"
    strategies = importlib.import_module(f"{package}.strategies")
    storage = importlib.import_module(f"{package}.storage").MemoryStorage()
    return getattr(strategies, LIMITS_CLASSES[kind])(storage)


def limits_sync(kind: str, keys: list[str], stats: bool) -> Callable[[int], None]:
    from limits import parse

    limiter = limits_limiter(kind, asynchronous=False)
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

    limiter = limits_limiter(kind, asynchronous=True)
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
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    args = parser.parse_args()
    iterations = 10_000
    rounds = 3 if args.quick else 15
    loop = asyncio.new_event_loop()

    for scenario, keys in (("hot key", key_names(1)), ("10k keys", key_names(KEYS))):
        cases: list[tuple[str, str, Runner]] = []
        for strategy in RateLimitStrategy:
            name = f"sergas_guard storage {strategy.value}"
            cases.append((name, "sync", ours_storage(strategy, keys)))
            cases.append((name, "async", ours_storage_async(strategy, keys)))
        for strategy in (RateLimitStrategy.SLIDING_WINDOW, RateLimitStrategy.TOKEN_BUCKET):
            name = f"sergas_guard RateLimiter.hit {strategy.value}"
            cases.append((name, "sync", ours_limiter(strategy, keys)))
            cases.append((name, "async", ours_limiter_async(strategy, keys)))
        for kind in ("fixed", "moving", "sliding-counter"):
            cases.append((f"limits {kind}", "sync", limits_sync(kind, keys, stats=False)))
            cases.append(
                (f"limits {kind} + window stats", "sync", limits_sync(kind, keys, stats=True))
            )
            cases.append((f"limits {kind}", "async", limits_async(kind, keys)))
        cases.append(("pyrate-limiter InMemoryBucket", "sync", pyrate(keys)))
        # One pass over every key first, so the 10k-key cases time live keys only.
        measure(loop, cases, len(keys), 1)
        best = measure(loop, cases, iterations, rounds)
        moving = {face: best[f"limits moving|{face}"] for face in ("sync", "async")}
        fixed = {face: best[f"limits fixed|{face}"] for face in ("sync", "async")}
        print(f"\n## {scenario} ({RATE}; best of {rounds} interleaved rounds", end="")
        print(f" x {iterations:,} decisions)\n")
        print(
            "| implementation | face | µs/decision | limits moving / this | limits fixed / this |"
        )
        print("| --- | --- | ---: | ---: | ---: |")
        for name, face, _ in cases:
            micros = best[f"{name}|{face}"]
            print(
                f"| {name} | {face} | {micros:.2f} | {moving[face] / micros:.2f}x"
                f" | {fixed[face] / micros:.2f}x |"
            )


if __name__ == "__main__":
    main()
