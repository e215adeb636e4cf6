"""The app stacks of web_apps.py without a server: CPU per request of the ASGI code alone.

Each factory's app is called directly with a synthetic ``GET /`` scope; no sockets, no
HTTP parsing. Configurations take turns (``--rounds``) and each keeps its best round,
so load from elsewhere on the machine inflates no one configuration only. The figure
is process CPU time, which under wrk the server multiplies (its own parsing and
system calls, and colder caches between requests), so compare rows with one another.
``--stub-limiter`` also measures our middleware with the limiter's decision replaced by
a constant, which separates the middleware's own cost from the limiter's.

    .venv/bin/python benchmarks/apps/in_process.py [bare_starlette static_headers ours_memory ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# As uvicorn --app-dir imports it: this directory is not a package.
web_apps: Any = importlib.import_module("web_apps")

DEFAULT = ("bare_starlette", "static_headers", "ours_memory", "ours_memory_no_headers")
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000")],
}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


async def _serve(app: Any, requests: int) -> float:
    """CPU µs per request over ``requests`` sequential calls."""
    started = time.process_time()
    for _ in range(requests):
        await app(dict(SCOPE), _receive, _send)
    return (time.process_time() - started) / requests * 1e6


def _stubbed_limiter() -> Any:
    app = web_apps.ours_memory()
    limiter = app.engine.rules.default.limiter
    decision = limiter.decide_sync("ip:127.0.0.1", 1)
    limiter.decide_sync = lambda key, cost: decision  # the limiter's work taken out
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("factories", nargs="*", default=list(DEFAULT))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=5000, help="per round")
    parser.add_argument("--stub-limiter", action="store_true")
    options = parser.parse_args()
    apps = {name: getattr(web_apps, name)() for name in options.factories}
    if options.stub_limiter:
        apps["ours_memory, limiter stubbed"] = _stubbed_limiter()
    best = dict.fromkeys(apps, float("inf"))
    for app in apps.values():
        await _serve(app, options.requests // 2)  # warm up
    for _ in range(options.rounds):
        for name, app in apps.items():
            best[name] = min(best[name], await _serve(app, options.requests))
    baseline = best[options.factories[0]]
    for name, cpu in best.items():
        print(f"{name:32} {cpu:6.2f} µs/request  (+{cpu - baseline:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
