"""Benchmark (not a test): ``/health`` under load against a real PostgreSQL.

Compares the registry with its result cache, the registry with single flight only
(``cache_ttl=0``), and the naive peer pattern of one check per request; reports
requests per second, latency and how many probes reached the database. Belongs in
``benchmarks/``; kept here until it moves. Run from the repository root:

    python -m benchmarks.bench_health
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sergas_guard.health import HealthCheckRegistry, health_router
from tests.health.conftest import CountingDatabaseCheck
from tests.servers import free_port, postgres_server


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, port


def _wrk(app: Any) -> str:
    server, thread, port = _serve(app)
    try:
        out = subprocess.run(
            ["wrk", "-t2", "-c64", "-d5s", f"http://127.0.0.1:{port}/health"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        server.should_exit = True
        thread.join()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    latency = re.search(r"Latency\s+(\S+)", out)[1]  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return f"{rps:8.0f} req/s  avg {latency:>8s}  non-2xx {errors[1] if errors else 0}"


def main() -> None:
    with postgres_server() as pg:
        for label, ttl in (("registry, cache_ttl=5s", 5.0), ("registry, single flight only", 0.0)):
            check = CountingDatabaseCheck("db", pg.dsn())
            registry = HealthCheckRegistry(cache_ttl=ttl, failure_cache_ttl=ttl)
            registry.register(check)
            app = Starlette()
            app.routes.extend(health_router(registry).routes)
            figures = _wrk(app)
            print(f"{label:32s} {figures}  DB probes {check.probes}")
        naive = CountingDatabaseCheck("db", pg.dsn())

        async def per_request(request: Request) -> JSONResponse:
            result = await naive.check()
            return JSONResponse({"status": result.status.value}, 200 if result.is_healthy else 503)

        figures = _wrk(Starlette(routes=[Route("/health", per_request)]))
        print(f"{'naive: one check per request':32s} {figures}  DB probes {naive.probes}")


if __name__ == "__main__":
    main()
