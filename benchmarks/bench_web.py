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
    ("floor: 2 static headers, no limit", "static_headers", "bare Starlette", False),
    ("floor: a dict count + 2 headers", "dict_counter", "bare Starlette", False),
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
    #: CPU time the server process spent per request (user + system), in µs.
    cpu_us: float


@dataclass
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def uvicorn(factory: str, redis_url: str, http: str, loop: str) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", f"web_apps:{factory}",
        "--app-dir", str(APPS_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log", "--http", http, "--loop", loop,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    process = subprocess.Popen(command, env=env)
    try:
        wait_for_port(port)
        yield Server(f"http://127.0.0.1:{port}/", process.pid)
    finally:
        process.terminate()
        process.wait(10)


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(server: Server, label: str, duration: float, connections: int) -> Measurement:
    """One wrk run against ``server``, with the server's CPU time per request."""
    cpu_before = server.cpu_seconds()
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", server.url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu = server.cpu_seconds() - cpu_before
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    # Anchored: a "+/- Stdev" column such as "69.99%" must not pass for the 99th percentile.
    p99_line = re.search(r"^\s*99%\s+(\S+)$", output, re.MULTILINE)
    p99 = _milliseconds(p99_line.group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    non_2xx = int(errors.group(1)) if errors else 0
    return Measurement(label, rps, p99, non_2xx, cpu / max(total, 1) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load first")
    parser.add_argument("--only", nargs="*", help="factories to run (default: all)")
    parser.add_argument(
        "--http", default="h11", choices=("h11", "httptools"), help="uvicorn's HTTP parser"
    )
    parser.add_argument(
        "--loop", default="asyncio", choices=("asyncio", "uvloop"), help="uvicorn's event loop"
    )
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
        servers = {
            label: stack.enter_context(uvicorn(factory, redis_url, options.http, options.loop))
            for label, factory, *_ in chosen
        }
        for label, server in servers.items():
            wrk(server, label, options.warmup, options.connections)
        for round_number in range(options.rounds):
            for label, server in servers.items():
                run = wrk(server, label, options.duration, options.connections)
                runs[label].append(run)
                print(
                    f"  round {round_number + 1} {label}: {run.requests_per_second:,.0f} req/s, "
                    f"{run.cpu_us:.0f} µs CPU/request",
                    file=sys.stderr,
                )
    # Ratios pair each run with the baseline's run of the same round (the load from
    # elsewhere was alike); figures are medians over the rounds.
    # "CPU/req" is the server's own CPU time per request: what the middleware costs,
    # much less disturbed by other load than req/s. "capacity" is bare's CPU/req over
    # this one's: the throughput ratio on a machine with a core to spare.
    print(
        f"\n{'configuration':34} {'req/s':>7} {'vs bare':>8} {'p99 ms':>7} "
        f"{'CPU/req':>9} {'capacity':>9} {'non-2xx':>7}"
    )
    for label, _, baseline, _ in chosen:
        measured = runs[label]
        rps = statistics.median(m.requests_per_second for m in measured)
        p99 = statistics.median(m.p99_ms for m in measured)
        cpu = statistics.median(m.cpu_us for m in measured)
        errors = sum(m.non_2xx for m in measured)
        ratio = capacity = "-"
        if baseline in runs:
            ratio = f"{_paired(measured, runs[baseline], 'requests_per_second'):.2f}x"
            capacity = f"{1 / _paired(measured, runs[baseline], 'cpu_us'):.2f}x"
        print(
            f"{label:34} {rps:7,.0f} {ratio:>8} {p99:7.1f} {cpu:7.0f}µs {capacity:>9} {errors:7d}"
        )
    if "sergas_guard Redis" in runs and "slowapi Redis" in runs:
        ours, theirs = runs["sergas_guard Redis"], runs["slowapi Redis"]
        print(
            f"\nsergas_guard Redis / slowapi Redis: "
            f"{_paired(ours, theirs, 'requests_per_second'):.2f}x req/s, "
            f"{1 / _paired(ours, theirs, 'cpu_us'):.2f}x capacity"
        )


def _paired(runs: list[Measurement], baseline: list[Measurement], field: str) -> float:
    """Median over rounds of this configuration's figure over the baseline's."""
    ratios: list[float] = [
        getattr(run, field) / getattr(base, field) for run, base in zip(runs, baseline, strict=True)
    ]
    return statistics.median(ratios)


if __name__ == "__main__":
    main()
