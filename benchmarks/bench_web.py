"""Web rate-limiting overhead under wrk: ours against slowapi and fastapi-limiter.

One run measures, each on a fresh single-process uvicorn on loopback loaded by wrk:
bare Starlette; our RateLimitMiddleware on memory and on Redis; slowapi's ASGI
middleware on memory and on Redis; bare FastAPI, our RateLimit dependency on Redis and
fastapi-limiter on Redis. It prints req/s, p99 latency and the ratio to the bare app of
the same framework: medians of ``--rounds`` interleaved rounds, ratios paired by round.
A private redis-server is started for the Redis rows.

    .venv/bin/python benchmarks/bench_web.py [--duration 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import free_port, redis_server, wait_for_port

APPS_DIR = Path(__file__).parent / "apps"

# (label, factory in apps/web_apps.py, baseline label, needs redis)
CONFIGS: tuple[tuple[str, str, str, bool], ...] = (
    ("bare Starlette", "bare_starlette", "bare Starlette", False),
    ("sergas_guard memory", "ours_memory", "bare Starlette", False),
    ("sergas_guard memory, no headers", "ours_memory_no_headers", "bare Starlette", False),
    ("sergas_guard Redis", "ours_redis", "bare Starlette", True),
    ("slowapi memory", "slowapi_memory", "bare Starlette", False),
    ("slowapi Redis", "slowapi_redis", "bare Starlette", True),
    ("bare FastAPI", "bare_fastapi", "bare FastAPI", False),
    ("sergas_guard dependency Redis", "ours_fastapi_dependency_redis", "bare FastAPI", True),
    ("fastapi-limiter Redis", "fastapi_limiter_redis", "bare FastAPI", True),
)


@dataclass
class Measurement:
    label: str
    requests_per_second: float
    p99_ms: float
    non_2xx: int


@contextlib.contextmanager
def uvicorn(factory: str, redis_url: str) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", f"web_apps:{factory}",
        "--app-dir", str(APPS_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    process = subprocess.Popen(command, env=env)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, duration: float, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses) of one wrk run."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return rps, p99, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load first")
    parser.add_argument("--only", nargs="*", help="factories to run (default: all)")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    chosen = [c for c in CONFIGS if not options.only or c[1] in options.only]

    # Every server runs for the whole benchmark and the rounds interleave the
    # configurations, so a burst of load from elsewhere on the machine hits one run of
    # each, not all runs of one.
    runs: dict[str, list[Measurement]] = {label: [] for label, *_ in chosen}
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()).url
        urls = {
            label: stack.enter_context(uvicorn(factory, redis_url)) for label, factory, *_ in chosen
        }
        for url in urls.values():
            wrk(url, options.warmup, options.connections)
        for round_number in range(options.rounds):
            for label, url in urls.items():
                rps, p99, errors = wrk(url, options.duration, options.connections)
                runs[label].append(Measurement(label, rps, p99, errors))
                print(f"  round {round_number + 1} {label}: {rps:,.0f} req/s", file=sys.stderr)
    # Ratios pair each run with the baseline's run of the same round (the load from
    # elsewhere was alike); figures are medians over the rounds.
    print(f"\n{'configuration':34} {'req/s':>9} {'p99 ms':>8} {'vs bare':>8} {'non-2xx':>8}")
    for label, _, baseline, _ in chosen:
        measured = runs[label]
        rps = statistics.median(m.requests_per_second for m in measured)
        p99 = statistics.median(m.p99_ms for m in measured)
        errors = sum(m.non_2xx for m in measured)
        ratio = "-"
        if baseline in runs:
            ratio = f"{_paired_ratio(measured, runs[baseline]):.2f}x"
        print(f"{label:34} {rps:9,.0f} {p99:8.1f} {ratio:>8} {errors:8d}")
    if "sergas_guard Redis" in runs and "slowapi Redis" in runs:
        versus = _paired_ratio(runs["sergas_guard Redis"], runs["slowapi Redis"])
        print(f"\nsergas_guard Redis / slowapi Redis: {versus:.2f}x")


def _paired_ratio(runs: list[Measurement], baseline: list[Measurement]) -> float:
    return statistics.median(
        run.requests_per_second / base.requests_per_second
        for run, base in zip(runs, baseline, strict=True)
    )


if __name__ == "__main__":
    main()
