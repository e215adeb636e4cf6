"""Load generators for the concurrency tests, importable by spawned worker processes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage

# Windows of ~115 days: no epoch-aligned window boundary falls inside a test run, and
# limit times window stays far below 2**53.
LONG_WINDOW_US = 10**13
LIMIT = 100


def checks_for(identity: str, strategy: RateLimitStrategy, extra: bool) -> list[LimitCheck]:
    """The limit under test (100 per long window), plus looser ones for the same identity."""
    specs = [LimitSpec(strategy, LIMIT, LONG_WINDOW_US, LIMIT)]
    if extra:
        specs += [
            LimitSpec(RateLimitStrategy.SLIDING_WINDOW, 150, LONG_WINDOW_US, 150),
            LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1000, LONG_WINDOW_US // 2, 1000),
        ]
    return [LimitCheck(f"sg:hammer:{{{identity}}}:{spec.slug}", spec) for spec in specs]


def hammer_async(
    url: str, identity: str, strategy: str, tasks: int, per_task: int, extra: bool
) -> int:
    """Run ``tasks`` concurrent coroutines, each deciding ``per_task`` requests; admitted count."""
    checks = checks_for(identity, RateLimitStrategy(strategy), extra)

    async def main() -> int:
        storage = RedisStorage(url, connect_timeout=5.0, socket_timeout=5.0)

        async def worker() -> int:
            admitted = 0
            for _ in range(per_task):
                results = await storage.decide(checks, 1)
                admitted += all(r.allowed for r in results)
            return admitted

        try:
            return sum(await asyncio.gather(*(worker() for _ in range(tasks))))
        finally:
            await storage.aclose()

    return asyncio.run(main())


def hammer_threads(
    url: str, identity: str, strategy: str, threads: int, per_thread: int, extra: bool
) -> int:
    """The sync face: ``threads`` threads sharing one storage (one connection pool)."""
    checks = checks_for(identity, RateLimitStrategy(strategy), extra)
    storage = RedisStorage(url, connect_timeout=5.0, socket_timeout=5.0)

    def worker() -> int:
        return sum(
            all(r.allowed for r in storage.decide_sync(checks, 1)) for _ in range(per_thread)
        )

    try:
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(lambda _: worker(), range(threads)))
    finally:
        storage.close_sync()
