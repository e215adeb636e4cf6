"""Redis storage throughput against the floor and against limits 5.x, in one run.

Starts its own redis-server on a free loopback port, then measures decisions per
second and microseconds per decision for:

* the floor: redis-py calling EVALSHA of a trivial script (one key);
* our RedisStorage, each strategy (one Lua round trip returning the full result);
* limits' Redis storage doing ``hit()`` + ``get_window_stats()`` (what a peer needs
  to produce the same headers), for the strategies it has;

each sync sequentially and async with 1 and 50 concurrent tasks. Traffic is spread
over 1,000 identities with a limit of 100 per minute, as a service would see it.
Run: ``.venv/bin/python benchmarks/bench_redis.py [--ops N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.storage.base import LimitCheck
from sergas_guard.storage.redis import RedisStorage
from tests.servers import redis_server

IDENTITIES = 1000
LIMIT, WINDOW_US = 100, 60_000_000
CONCURRENCY = (1, 50)

# limits' counterpart of each of our strategies (it has no token or leaky bucket).
LIMITS_PEERS: dict[RateLimitStrategy, tuple[type[Any], type[Any]]] = {
    RateLimitStrategy.FIXED_WINDOW: (
        limits.strategies.FixedWindowRateLimiter,
        limits.aio.strategies.FixedWindowRateLimiter,
    ),
    RateLimitStrategy.SLIDING_WINDOW: (
        limits.strategies.SlidingWindowCounterRateLimiter,
        limits.aio.strategies.SlidingWindowCounterRateLimiter,
    ),
    RateLimitStrategy.SLIDING_LOG: (
        limits.strategies.MovingWindowRateLimiter,
        limits.aio.strategies.MovingWindowRateLimiter,
    ),
}

SyncOp = Callable[[int], object]
AsyncOp = Callable[[int], Awaitable[object]]


def best_rate_sync(op: SyncOp, ops: int, repeat: int) -> float:
    """Decisions per second, best of ``repeat`` runs of ``ops`` sequential calls."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(ops):
            op(i)
        rates.append(ops / (time.perf_counter() - started))
    return max(rates)


AsyncFactory = Callable[[], tuple[AsyncOp, Callable[[], Awaitable[None]]]]


def best_rate_async(make: AsyncFactory, ops: int, repeat: int, concurrency: int) -> float:
    """Decisions per second with ``concurrency`` tasks sharing ``ops`` calls."""

    async def run() -> float:
        op, close = make()
        per_task = ops // concurrency

        async def worker(offset: int) -> None:
            for i in range(per_task):
                await op(offset + i * concurrency)

        await op(0)  # connect and load scripts outside the timing
        rates = []
        for _ in range(repeat):
            started = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            rates.append(per_task * concurrency / (time.perf_counter() - started))
        await close()
        return max(rates)

    return asyncio.run(run())


def measure(
    name: str,
    make_sync: Callable[[], SyncOp],
    make_async: AsyncFactory,
    ops: int,
    repeat: int,
) -> dict[str, float]:
    """One row: sync sequential, then async at each concurrency."""
    row = {"sync": best_rate_sync(make_sync(), ops, repeat)}
    for concurrency in CONCURRENCY:
        row[f"async c={concurrency}"] = best_rate_async(make_async, ops, repeat, concurrency)
    print(f"  measured {name}", file=sys.stderr)
    return row


def floor_row(url: str, ops: int, repeat: int) -> dict[str, float]:
    script = "return 1"

    def make_sync() -> SyncOp:
        client = redis.Redis.from_url(url)
        sha = client.script_load(script)
        return lambda i: client.evalsha(sha, 1, f"floor:{{{i % IDENTITIES}}}")

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        client = aioredis.Redis.from_url(url)
        sha = redis.Redis.from_url(url).script_load(script)

        async def op(i: int) -> object:
            return await client.evalsha(sha, 1, f"floor:{{{i % IDENTITIES}}}")

        return op, client.aclose

    return measure("floor", make_sync, make_async, ops, repeat)


def ours_row(url: str, strategy: RateLimitStrategy, ops: int, repeat: int) -> dict[str, float]:
    spec = LimitSpec(strategy, LIMIT, WINDOW_US, LIMIT)
    checks = [[LimitCheck(f"sg:bench:{{{n}}}:{spec.slug}", spec)] for n in range(IDENTITIES)]

    def make_sync() -> SyncOp:
        storage = RedisStorage(url, socket_timeout=1.0)
        return lambda i: storage.decide_sync(checks[i % IDENTITIES], 1)

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        storage = RedisStorage(url, socket_timeout=1.0)

        async def op(i: int) -> object:
            return await storage.decide(checks[i % IDENTITIES], 1)

        return op, storage.aclose

    return measure(f"ours {strategy.value}", make_sync, make_async, ops, repeat)


def limits_row(url: str, strategy: RateLimitStrategy, ops: int, repeat: int) -> dict[str, float]:
    sync_cls, async_cls = LIMITS_PEERS[strategy]
    item = limits.RateLimitItemPerMinute(LIMIT)
    address = url.split("://", 1)[1].rsplit("/", 1)[0]

    def make_sync() -> SyncOp:
        limiter = sync_cls(limits.storage.RedisStorage(f"redis://{address}"))

        def op(i: int) -> object:
            who = str(i % IDENTITIES)
            return limiter.hit(item, who), limiter.get_window_stats(item, who)

        return op

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        storage = limits.aio.storage.RedisStorage(
            f"async+redis://{address}", implementation="redispy"
        )
        limiter = async_cls(storage)

        async def op(i: int) -> object:
            who = str(i % IDENTITIES)
            return await limiter.hit(item, who), await limiter.get_window_stats(item, who)

        async def close() -> None:
            return None

        return op, close

    return measure(f"limits {strategy.value}", make_sync, make_async, ops, repeat)


def render(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: rate and µs per decision per mode, ratios to floor and limits."""
    modes = ["sync", *(f"async c={c}" for c in CONCURRENCY)]
    header = "| storage | " + " | ".join(f"{m}: /s (µs)" for m in modes)
    header += " | vs floor (" + ", ".join(modes) + ") | vs limits+stats |"
    lines = [header, "|" + " --- |" * (len(modes) + 3)]
    floor = rows["floor"]
    for name, row in rows.items():
        cells = [f"{row[m]:,.0f} ({1e6 / row[m]:.0f})" for m in modes]
        to_floor = ", ".join(f"{row[m] / floor[m]:.2f}" for m in modes)
        peer = rows.get(name.replace("ours", "limits", 1))
        to_limits = (
            ", ".join(f"{row[m] / peer[m]:.2f}" for m in modes)
            if name.startswith("ours") and peer
            else "—"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {to_floor} | {to_limits} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=5000, help="decisions per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (best counts)")
    options = parser.parse_args()
    with redis_server() as server:
        url = server.url
        rows = {"floor": floor_row(url, options.ops, options.repeat)}
        for strategy in RateLimitStrategy:
            redis.Redis.from_url(url).flushall()
            rows[f"ours {strategy.value}"] = ours_row(url, strategy, options.ops, options.repeat)
        for strategy in LIMITS_PEERS:
            redis.Redis.from_url(url).flushall()
            rows[f"limits {strategy.value}"] = limits_row(
                url, strategy, options.ops, options.repeat
            )
    print(render(rows))
    ours = [r for n, r in rows.items() if n.startswith("ours")]
    worst = min(r[m] / rows["floor"][m] for r in ours for m in rows["floor"])
    print(
        f"\nworst ratio to the floor: {worst:.2f} (median of all: "
        f"{statistics.median(r[m] / rows['floor'][m] for r in ours for m in r):.2f})"
    )


if __name__ == "__main__":
    main()
