"""Redis storage throughput against the floor and against limits 5.x, in one run.

Starts its own redis-server on a free loopback port, then measures decisions per
second and microseconds per decision for:

* the floor: redis-py calling EVALSHA of a trivial script (one key);
* our RedisStorage, each strategy (one Lua round trip returning the full result);
* limits' Redis storage doing ``hit()`` + ``get_window_stats()`` (what a peer needs
  to produce the same headers), for the strategies it has;

each sync sequentially and async with 1 and 50 concurrent tasks (with the client's own
CPU time per async decision). Traffic is spread
over 1,000 identities with a limit of 100 per minute, as a service would see it.
Contenders take turns in short slices (best slice counts) so a busy machine's noise
falls on all alike. A second table gives the Redis CPU each script costs per call
(``INFO commandstats``), which no client-side change can remove.
A third table (``--pipelined``) puts our async decisions at 50 and 500 in flight in one
process beside ``redis-benchmark -c 50`` (the C client, 50 connections, no pipelining)
running EVALSHA of a trivial ``INCR`` script against the same server, turn by turn: rate,
client CPU µs per decision and p99 latency; our decisions only match it by pipelining.
Run: ``.venv/bin/python benchmarks/bench_redis.py [--ops N] [--rounds R] [--pipelined]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.ratelimit.stores.script import DECIDE_SCRIPT, DECIDE_SHA, script_args
from sergas_guard.redis import RedisClient, SingleTarget, SyncRedisClient, parse_url
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
AsyncFactory = Callable[[], tuple[AsyncOp, Callable[[], Awaitable[None]]]]


@dataclass(frozen=True)
class Contender:
    """One row of the table: how to build its sync and async decision functions."""

    name: str
    make_sync: Callable[[], SyncOp]
    make_async: AsyncFactory
    # For script contenders: the EVALSHA of call i as (sha, keys, args), to measure the
    # script's own Redis CPU.
    script_call: Callable[[int], tuple[str, list[str], list[Any]]] | None = None


# The machine is shared, so contenders take turns in short slices: noise then falls on all
# of them alike, and each one's best slice is compared with the others' best.


def rates_sync(contenders: list[Contender], ops: int, rounds: int) -> dict[str, float]:
    """Best decisions/s of each contender over ``rounds`` interleaved slices of ``ops`` calls."""
    ops_of = {c.name: c.make_sync() for c in contenders}
    best = dict.fromkeys(ops_of, 0.0)
    for op in ops_of.values():
        op(0)  # connect and load scripts outside the timing
    for round_ in range(rounds):
        for name, op in ops_of.items():
            base = round_ * ops
            started = time.perf_counter()
            for i in range(base, base + ops):
                op(i)
            best[name] = max(best[name], ops / (time.perf_counter() - started))
    return best


def rates_async(
    contenders: list[Contender], ops: int, rounds: int, concurrency: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Like :func:`rates_sync`, with ``concurrency`` tasks sharing each slice.

    Also returns each contender's least client CPU (this process's user + system time,
    µs) per decision over its slices: the client's own cost, which the round trip's
    waiting and the other jobs on the machine do not blur as they blur the rate.
    """

    async def run() -> tuple[dict[str, float], dict[str, float]]:
        made = {c.name: c.make_async() for c in contenders}
        best = dict.fromkeys(made, 0.0)
        cpu = dict.fromkeys(made, float("inf"))
        per_task = ops // concurrency
        for op, _ in made.values():
            await op(0)
        for round_ in range(rounds):
            for name, (op, _) in made.items():

                async def worker(offset: int, op: AsyncOp = op) -> None:
                    for i in range(per_task):
                        await op(offset + i * concurrency)

                base = round_ * ops
                started, cpu_started = time.perf_counter(), time.process_time()
                await asyncio.gather(*(worker(base + k) for k in range(concurrency)))
                elapsed = time.perf_counter() - started
                used = time.process_time() - cpu_started
                best[name] = max(best[name], per_task * concurrency / elapsed)
                cpu[name] = min(cpu[name], used / (per_task * concurrency) * 1e6)
        for _, close in made.values():
            await close()
        return best, cpu

    return asyncio.run(run())


# The least any stored decision does: read the clock and one key, write it back with an
# expiry, return a result. Not a rate limiter; it shows what the trivial floor leaves out.
STATEFUL_FLOOR = """
local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], t[1], 'PXAT', string.format('%.0f', t[1] * 1000 + 60000))
return '1 100 99 0 60'
"""


def floor(url: str, script: str = "return 1", name: str = "floor") -> Contender:
    sha = redis.Redis.from_url(url).script_load(script)

    def make_sync() -> SyncOp:
        client = redis.Redis.from_url(url)
        return lambda i: client.evalsha(sha, 1, f"floor:{{{i % IDENTITIES}}}")

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        client = aioredis.Redis.from_url(url)

        async def op(i: int) -> object:
            return await client.evalsha(sha, 1, f"floor:{{{i % IDENTITIES}}}")

        return op, client.aclose

    return Contender(
        name, make_sync, make_async, lambda i: (sha, [f"floor:{{{i % IDENTITIES}}}"], [])
    )


def ours(url: str, strategy: RateLimitStrategy) -> Contender:
    spec = LimitSpec(strategy, LIMIT, WINDOW_US, LIMIT)
    checks = [[LimitCheck(f"sg:bench:{{{n}}}:{spec.slug}", spec)] for n in range(IDENTITIES)]

    def make_sync() -> SyncOp:
        storage = RedisStorage(url, connect_timeout=1.0, socket_timeout=1.0)
        return lambda i: storage.decide_sync(checks[i % IDENTITIES], 1)

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        storage = RedisStorage(url, connect_timeout=1.0, socket_timeout=1.0)

        async def op(i: int) -> object:
            return await storage.decide(checks[i % IDENTITIES], 1)

        return op, storage.aclose

    def script_call(i: int) -> tuple[str, list[str], list[Any]]:
        keys, args = script_args(checks[i % IDENTITIES], 1, None)
        return DECIDE_SHA, keys, args

    return Contender(f"ours {strategy.value}", make_sync, make_async, script_call)


def peer(url: str, strategy: RateLimitStrategy) -> Contender:
    sync_cls, async_cls = LIMITS_PEERS[strategy]
    item = limits.RateLimitItemPerMinute(LIMIT)
    address = url.split("://", 1)[1].rsplit("/", 1)[0]

    def make_sync() -> SyncOp:
        limiter = sync_cls(limits.storage.RedisStorage(f"redis://{address}"))

        def op(i: int) -> object:
            who = f"{strategy.value}:{i % IDENTITIES}"
            return limiter.hit(item, who), limiter.get_window_stats(item, who)

        return op

    def make_async() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        storage = limits.aio.storage.RedisStorage(
            f"async+redis://{address}", implementation="redispy"
        )
        limiter = async_cls(storage)

        async def op(i: int) -> object:
            who = f"{strategy.value}:{i % IDENTITIES}"
            return await limiter.hit(item, who), await limiter.get_window_stats(item, who)

        async def close() -> None:
            return None

        return op, close

    return Contender(f"limits {strategy.value}", make_sync, make_async)


def server_usec(contenders: list[Contender], url: str, ops: int, rounds: int) -> dict[str, float]:
    """Redis CPU µs per call of each script contender (``INFO commandstats``, best round).

    Calls are pipelined, so the figure is the script's steady-state cost, free of the
    wake-ups and cache misses a sequential client adds on a busy machine.
    """
    admin = redis.Redis.from_url(url)
    admin.script_load(DECIDE_SCRIPT)
    best: dict[str, float] = {}
    for contender in contenders:
        if contender.script_call is None:
            continue  # limits: several commands per decision, no single figure
        for round_ in range(rounds):
            admin.flushall(asynchronous=False)
            admin.config_resetstat()
            pipe = admin.pipeline(transaction=False)
            for i in range(ops):
                sha, keys, args = contender.script_call(round_ * ops + i)
                pipe.evalsha(sha, len(keys), *keys, *args)
            pipe.execute()
            usec = float(admin.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
            best[contender.name] = min(best.get(contender.name, usec), usec)
    admin.close()
    return best


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


INCR_SCRIPT = "return redis.call('INCR', KEYS[1])"
PIPELINED_CONCURRENCY = (50, 500)
PIPELINED_CONNECTIONS = (1, 2)


def redis_benchmark(port: int, sha: str, requests: int) -> tuple[float, float]:
    """``redis-benchmark -c 50`` running EVALSHA of ``sha`` on one key: (rate/s, p99 ms)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not installed (apt-get install redis-tools)")
    out = subprocess.run(
        [binary, "-p", str(port), "-c", "50", "-n", str(requests), "--csv",
         "evalsha", sha, "1", "k"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = out.strip().splitlines()[-1].replace('"', "").split(",")
    return float(fields[-7]), float(fields[-2])


async def pipelined_slice(storage: RedisStorage, ops: int, concurrency: int) -> tuple[float, ...]:
    """One slice of ``ops`` decisions by ``concurrency`` tasks on one storage:
    (rate/s, client CPU µs per decision, p99 latency ms)."""
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 10**9, WINDOW_US, 10**9)
    checks = [[LimitCheck(f"sg:pipe:{{{n}}}", spec)] for n in range(IDENTITIES)]
    per_task = ops // concurrency
    latencies: list[float] = []
    clock = time.perf_counter

    async def worker(offset: int) -> None:
        record = latencies.append
        for i in range(per_task):
            started = clock()
            await storage.decide(checks[(offset + i * concurrency) % IDENTITIES], 1)
            record(clock() - started)

    started, cpu_started = clock(), time.process_time()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed, used = clock() - started, time.process_time() - cpu_started
    done = per_task * concurrency
    latencies.sort()
    return done / elapsed, used / done * 1e6, latencies[int(len(latencies) * 0.99)] * 1e3


def pipelined(server_port: int, url: str, ops: int, rounds: int) -> str:
    """Our async decisions at 50 and 500 in flight beside redis-benchmark -c 50, by turns;
    the best slice of each (the least CPU and p99 of any slice) as a Markdown table."""
    admin = redis.Redis.from_url(url)
    sha = admin.script_load(INCR_SCRIPT)
    admin.close()
    best: dict[str, list[float]] = {}

    def keep(name: str, rate: float, cpu: float, p99: float) -> None:
        old = best.setdefault(name, [0.0, float("inf"), float("inf")])
        best[name] = [max(old[0], rate), min(old[1], cpu), min(old[2], p99)]

    async def run() -> None:
        storages = {
            connections: RedisStorage(
                url, connect_timeout=1.0, socket_timeout=1.0, max_connections=connections
            )
            for connections in PIPELINED_CONNECTIONS
        }
        for storage in storages.values():
            await pipelined_slice(storage, 1000, 50)  # connect, load the script
        for _ in range(rounds):
            rate, p99 = redis_benchmark(server_port, sha, ops)
            keep("redis-benchmark -c 50 (EVALSHA INCR)", rate, float("nan"), p99)
            for concurrency in PIPELINED_CONCURRENCY:
                for connections, storage in storages.items():
                    rate, cpu, p99 = await pipelined_slice(storage, ops, concurrency)
                    name = f"ours, {concurrency} in flight, {connections} connection(s)"
                    keep(name, rate, cpu, p99)
        for storage in storages.values():
            await storage.aclose()

    asyncio.run(run())
    floor_rate = best["redis-benchmark -c 50 (EVALSHA INCR)"][0]
    lines = [
        "| client | decisions/s | vs redis-benchmark | client CPU µs/decision | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (rate, cpu, p99) in best.items():
        shown = "—" if cpu == float("inf") else f"{cpu:.1f}"  # another process's CPU
        lines.append(f"| {name} | {rate:,.0f} | {rate / floor_rate:.2f} | {shown} | {p99:.2f} |")
    return "\n".join(lines)


SYNC_THREADS = (1, 8)


class IoThreadClient:
    """The other design for the sync face, measured against ours: one asyncio loop in a
    thread of its own per process, with threads handing it their calls."""

    def __init__(self, url: str) -> None:
        target = parse_url(url, connect_timeout=1.0, socket_timeout=1.0)
        assert isinstance(target, SingleTarget)
        self.loop = asyncio.new_event_loop()
        self.client = RedisClient(target)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, command: bytes) -> object:
        return asyncio.run_coroutine_threadsafe(self.client.execute(command), self.loop).result()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def sync_faces(url: str, ops: int, rounds: int) -> str:
    """Calls/s and CPU µs per call of the two sync designs (and redis-py's pool), with 1
    and 8 threads, by turns, best slice each, as a Markdown table."""
    admin = redis.Redis.from_url(url)
    sha = admin.script_load(INCR_SCRIPT)
    target = parse_url(url, connect_timeout=1.0, socket_timeout=1.0)
    assert isinstance(target, SingleTarget)
    ours_client = SyncRedisClient(target)
    io_thread = IoThreadClient(url)
    pooled = redis.Redis.from_url(url)
    command = b"*4\r\n$7\r\nEVALSHA\r\n$40\r\n" + sha.encode() + b"\r\n$1\r\n1\r\n$1\r\nk\r\n"
    faces: dict[str, Callable[[], object]] = {
        "ours: leader/follower on shared sockets": lambda: ours_client.execute(command),
        "one I/O thread running asyncio": lambda: io_thread.call(command),
        "redis-py pool (a socket per thread)": lambda: pooled.evalsha(sha, 1, "k"),
    }
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for _ in range(rounds):
        for threads in SYNC_THREADS:
            for name, face in faces.items():
                per_thread = ops // threads

                def work(face: Callable[[], object] = face, n: int = per_thread) -> None:
                    for _ in range(n):
                        face()

                workers = [threading.Thread(target=work) for _ in range(threads)]
                started, cpu_started = time.perf_counter(), time.process_time()
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                done = per_thread * threads
                rate, usec = done / elapsed, cpu / done * 1e6
                old = best.get((name, threads), (0.0, float("inf")))
                best[name, threads] = (max(old[0], rate), min(old[1], usec))
    ours_client.close()
    io_thread.close()
    pooled.close()
    admin.close()
    lines = [
        "| sync face | "
        + " | ".join(f"{t} thread(s): calls/s (CPU µs)" for t in SYNC_THREADS)
        + " |",
        "|" + " --- |" * (len(SYNC_THREADS) + 1),
    ]
    for name in faces:
        cells = [f"{best[name, t][0]:,.0f} ({best[name, t][1]:.1f})" for t in SYNC_THREADS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--ops", type=int, default=400, help="decisions per timed slice")
    parser.add_argument("--rounds", type=int, default=20, help="slices per contender")
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="only the table against redis-benchmark -c 50 (--ops decisions per slice)",
    )
    parser.add_argument(
        "--sync-face",
        action="store_true",
        help="only the table of sync designs (--ops calls per slice)",
    )
    options = parser.parse_args()
    if options.sync_face:
        with redis_server() as server:
            print(sync_faces(server.url, options.ops, options.rounds))
        return
    if options.pipelined:
        with redis_server() as server:
            print(pipelined(server.port, server.url, options.ops, options.rounds))
        return
    # Each identity sees at most 3 modes x (rounds + 1) slices x ops / IDENTITIES requests:
    # keep that under the limit so every decision is an admission, for everyone alike.
    if 3 * (options.rounds + 1) * options.ops > LIMIT * IDENTITIES:
        parser.error("too many decisions per minute for the traffic model; lower --ops")
    with redis_server() as server:
        url = server.url
        contenders = [floor(url), floor(url, STATEFUL_FLOOR, "floor with state")]
        contenders += [ours(url, strategy) for strategy in RateLimitStrategy]
        contenders += [peer(url, strategy) for strategy in LIMITS_PEERS]
        columns = {"sync": rates_sync(contenders, options.ops, options.rounds)}
        client_cpu: dict[str, dict[str, float]] = {}
        for concurrency in CONCURRENCY:
            mode = f"async c={concurrency}"
            columns[mode], client_cpu[mode] = rates_async(
                contenders, options.ops, options.rounds, concurrency
            )
        cpu = server_usec(contenders, url, options.ops, 5)
    rows = {c.name: {mode: rates[c.name] for mode, rates in columns.items()} for c in contenders}
    print(render(rows))
    modes = list(client_cpu)
    print("\n| storage | " + " | ".join(f"client CPU µs, {m}" for m in modes) + " |")
    print("|" + " --- |" * (len(modes) + 1))
    for c in contenders:
        print(f"| {c.name} | " + " | ".join(f"{client_cpu[m][c.name]:.1f}" for m in modes) + " |")
    print("\n| script | Redis CPU µs per call |\n| --- | --- |")
    for name, usec in cpu.items():
        print(f"| {name} | {usec:.2f} |")
    ratios = [r[m] / rows["floor"][m] for n, r in rows.items() if n.startswith("ours") for m in r]
    print(f"\nratio to the floor: worst {min(ratios):.2f}, median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
