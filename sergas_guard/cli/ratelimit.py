"""``sergas-guard ratelimit``: see a strategy decide, and drive load through a limiter."""

from __future__ import annotations

import asyncio
import time

import click
from rich.console import Console
from rich.table import Table

from sergas_guard.clock import ManualClock
from sergas_guard.errors import GuardError
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.stores.memory import MemoryStorage

__all__ = ["command"]

STRATEGIES = [strategy.value for strategy in RateLimitStrategy]


@click.group(name="ratelimit")
def command() -> None:
    """Rate-limit demos and load tests (in memory unless --storage says otherwise)."""


@command.command()
@click.option(
    "--strategy", type=click.Choice(STRATEGIES), default="token_bucket", show_default=True
)
@click.option("--limit", "max_requests", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--window", type=click.FloatRange(min=0.001), default=1.0, show_default=True, help="seconds"
)
@click.option("--burst", type=click.IntRange(min=1), default=None, help="bucket strategies only")
@click.option("--requests", "count", type=click.IntRange(1, 10_000), default=15, show_default=True)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.0),
    default=0.05,
    show_default=True,
    help="simulated seconds between requests",
)
def demo(
    strategy: str, max_requests: int, window: float, burst: int | None, count: int, interval: float
) -> None:
    """Simulate a burst of requests against one limiter and show each decision.

    Time is simulated, so the run is instant and repeatable.
    """
    clock = ManualClock(1_700_000_000.0)
    try:
        config = RateLimitConfig(
            name="demo",
            max_requests=max_requests,
            window_seconds=window,
            strategy=strategy,
            burst=burst,
        )
    except GuardError as exc:
        raise click.UsageError(str(exc)) from None
    limiter = RateLimiter(config, MemoryStorage(clock=clock))
    table = Table(
        title=f"{config.specs()[0].describe()}: {count} requests, one every {interval:g}s"
    )
    for column in ("#", "t (s)", "decision", "remaining", "retry after (s)", "reset after (s)"):
        table.add_column(column, justify="right")
    started = clock.time()
    admitted = 0
    for number in range(1, count + 1):
        result = limiter.hit_sync("client")
        admitted += result.allowed
        table.add_row(
            str(number),
            f"{clock.time() - started:.3f}",
            "[green]admitted[/]" if result.allowed else "[red]rejected[/]",
            str(result.remaining),
            f"{result.retry_after:.3f}" if not result.allowed else "-",
            f"{result.reset_after:.3f}",
        )
        clock.advance(interval)
    console = Console()
    console.print(table)
    console.print(f"{admitted} admitted, {count - admitted} rejected")


@command.command(name="load-test")
@click.option(
    "--strategy", type=click.Choice(STRATEGIES), default="sliding_window", show_default=True
)
@click.option(
    "--rate",
    default="1000/second",
    show_default=True,
    help="limit per client, e.g. '100/second; 5000/minute'",
)
@click.option("--clients", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option(
    "--requests",
    "per_client",
    type=click.IntRange(1, 1_000_000),
    default=200,
    show_default=True,
    help="per client",
)
@click.option(
    "--shared-key/--key-per-client", default=False, help="all clients on one key, or one each"
)
@click.option("--storage", "storage_url", default="memory://", show_default=True)
def load_test(
    strategy: str, rate: str, clients: int, per_client: int, shared_key: bool, storage_url: str
) -> None:
    """Drive concurrent simulated clients through a limiter; report counts and decisions/s."""
    try:
        limiter = RateLimiter(rate, storage_url, name="load-test", strategy=strategy)
    except GuardError as exc:
        raise click.UsageError(str(exc)) from None
    admitted, elapsed = asyncio.run(_drive(limiter, clients, per_client, shared_key))
    total = clients * per_client
    table = Table(
        title=f"load test: {clients} clients x {per_client} requests, {rate} ({strategy})"
    )
    for column in ("decisions", "admitted", "rejected", "seconds", "decisions/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(total),
        str(admitted),
        str(total - admitted),
        f"{elapsed:.3f}",
        f"{total / elapsed:,.0f}",
    )
    Console().print(table)


async def _drive(
    limiter: RateLimiter, clients: int, per_client: int, shared_key: bool
) -> tuple[int, float]:
    async def client(number: int) -> int:
        key = "shared" if shared_key else f"client-{number}"
        admitted = 0
        for _ in range(per_client):
            admitted += (await limiter.hit(key)).allowed
            await asyncio.sleep(0)  # let the other clients interleave, as real ones would
        return admitted

    started = time.perf_counter()
    try:
        counts = await asyncio.gather(*(client(n) for n in range(clients)))
    finally:
        await limiter.aclose()
    return sum(counts), time.perf_counter() - started
