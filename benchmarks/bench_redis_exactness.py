"""Exactness of a cold burst on a busy host: our Redis storage against limits', one run.

Issue 14's observation as a table: 4 freshly spawned processes each fire N concurrent
decisions (100, then 1,000) at one 100/hour limit on one local redis-server, with
default settings and two CPU-bound processes running beside them; repeated for every
strategy. Per contender and case: how many runs admitted exactly 100, the range of
admitted totals, how many decisions raised to their caller (and what), how many were
answered by our local fallback instead of Redis, and the slowest decision (seconds
from the common start). limits 5.x (its asyncio Redis storage on redis-py, the driver
we use too) has the fixed window, the sliding window counter and the moving window.
"sync" is ours on the sync face (N threads per process, one ``hit_sync`` each).
"previous" is our storage with the defaults before issue 14 (50 ms timeouts, the
circuit opening on 3 failures in a row, a fallback enforcing the whole limit). The
contenders alternate run by run, so the machine's noise falls on all alike.

``--cluster`` runs the same against a local 3-master Redis Cluster
(``redis+cluster://``; limits through its ``RedisClusterStorage`` on redis-py).

Run: ``.venv/bin/python benchmarks/bench_redis_exactness.py [--runs 10]
[--concurrency 100 1000] [--strategies fixed_window ...] [--processes 4] [--hogs 2]
[--contenders ours previous limits] [--cluster]``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import redis_cluster, redis_server
from tests.storage._burst import LIMIT, LIMITS_STRATEGIES, STRATEGIES, burst, cpu_hogs


@dataclass
class Row:
    """The runs of one contender on one case."""

    admitted: list[int] = field(default_factory=list)
    exceptions: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    slowest: float = 0.0
    close_errors: int = 0

    def cells(self) -> list[str]:
        exact = sum(a == LIMIT for a in self.admitted)
        raised = sum(self.exceptions.values())
        kinds = ", ".join(sorted({k.split(":")[0] for k in self.exceptions})) or "—"
        return [
            f"{exact}/{len(self.admitted)}",
            f"{min(self.admitted)}-{max(self.admitted)}",
            f"{raised} ({kinds})" if raised else "0",
            str(self.fallbacks),
            f"{self.slowest:.2f}",
            str(self.close_errors),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument(
        "--contenders", nargs="+", default=["ours", "previous", "limits"],
        choices=["ours", "sync", "previous", "limits"],
    )  # fmt: skip
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    options = parser.parse_args()

    rows: dict[tuple[int, str, str], Row] = {}
    names = itertools.count()
    started = time.monotonic()
    with redis_cluster() if options.cluster else redis_server() as server, cpu_hogs(options.hogs):
        for concurrency, strategy in itertools.product(options.concurrency, options.strategies):
            contenders = [
                c for c in options.contenders if c != "limits" or strategy in LIMITS_STRATEGIES
            ]
            for run, contender in itertools.product(range(options.runs), contenders):
                outcome = burst(
                    server.url,
                    name=f"exact{next(names)}",
                    strategy=strategy,
                    processes=options.processes,
                    concurrency=concurrency,
                    contender=contender,
                )
                row = rows.setdefault((concurrency, strategy, contender), Row())
                row.admitted.append(outcome.admitted)
                row.exceptions.update(outcome.exceptions)
                row.fallbacks += outcome.results.get("FallbackResult", 0)
                row.slowest = max(row.slowest, outcome.slowest)
                row.close_errors += sum(bool(o.close_error) for o in outcome.outcomes)
                print(
                    f"{concurrency:>5} {strategy:<15} {contender:<7} run {run + 1}: "
                    f"admitted {outcome.admitted}, raised {sum(outcome.exceptions.values())}, "
                    f"slowest {outcome.slowest:.2f}s",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"\n{options.processes} cold processes x N concurrent hits on one {LIMIT}/hour limit "
        f"on {'a 3-master Redis Cluster' if options.cluster else 'one redis-server'}, "
        f"{options.hogs} CPU hogs beside, {options.runs} runs per row "
        f"({time.monotonic() - started:.0f} s in all)\n"
    )
    header = [
        "N",
        "strategy",
        "contender",
        f"runs exactly {LIMIT}",
        "admitted (min-max)",
        "raised to callers",
        "fallback answers",
        "slowest decision (s)",
        "aclose() raised",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for (concurrency, strategy, contender), row in rows.items():
        print("| " + " | ".join([f"{concurrency:,}", strategy, contender, *row.cells()]) + " |")


if __name__ == "__main__":
    main()
