"""Through real servers: uvicorn on loopback, a concurrent HTTP client, real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.ratelimit.limiter import StorageErrorPolicy
from sergas_guard.storage import RedisStorage
from tests.servers import RedisServer, free_port, wait_for_port
from tests.web.conftest import Serve, asgi_client


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def hello_app() -> Starlette:
    return Starlette(routes=[Route("/", hello)])


async def burst(urls: list[str], total: int) -> Counter[int]:
    """``total`` requests at once, spread round-robin over ``urls``, over fresh connections."""
    limits = httpx.Limits(max_connections=total, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(*(client.get(urls[n % len(urls)]) for n in range(total)))
    return Counter(r.status_code for r in responses)


async def test_uvicorn_admits_exactly_the_limit_under_concurrency(uvicorn_app: Serve) -> None:
    # A sliding log admits at most the limit in any window: exact even across a boundary.
    app = RateLimitMiddleware(hello_app(), "30/minute", strategy="sliding_log")
    with uvicorn_app(app) as base:
        counts = await burst([base + "/"], 80)
    assert counts == Counter({200: 30, 429: 50})


@pytest.mark.redis
async def test_uvicorn_on_redis_admits_exactly_the_limit(
    uvicorn_app: Serve, redis_url: str
) -> None:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    app = RateLimitMiddleware(hello_app(), "40/minute", storage=storage, strategy="sliding_log")
    with uvicorn_app(app) as base:
        counts = await burst([base + "/"], 100)
    assert counts == Counter({200: 40, 429: 60})
    assert app.metrics()["unchecked"] == 0


@pytest.fixture
def two_workers(redis_url: str) -> Iterator[list[str]]:
    """Two uvicorn processes serving the same app, sharing one real Redis."""
    env = {**os.environ, "SG_WEB_STORAGE": redis_url, "SG_WEB_LIMIT": "25/minute"}
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.web.served_app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_for_port(port)
        yield [f"http://127.0.0.1:{port}/" for port in ports]
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


@pytest.mark.redis
@pytest.mark.slow
async def test_two_uvicorn_processes_sharing_redis_admit_exactly_the_limit(
    two_workers: list[str],
) -> None:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        # Waves of 20 concurrent requests, 10 to each process, so that both serve from
        # the first wave on and race each other for the shared budget.
        for _ in range(6):
            wave = [client.get(two_workers[n % 2]) for n in range(20)]
            responses.extend(await asyncio.gather(*wave))
    assert Counter(r.status_code for r in responses) == Counter({200: 25, 429: 95})
    served_by = {r.text for r in responses if r.status_code == 200}
    assert len(served_by) == 2  # both processes admitted some: the budget really is shared


@pytest.mark.redis
async def test_lifespan_closes_the_storage_connections(uvicorn_app: Serve, redis_url: str) -> None:
    storage = RedisStorage(redis_url)
    app = RateLimitMiddleware(hello_app(), "10/minute", storage=storage)
    with uvicorn_app(app, lifespan="on") as base:
        async with httpx.AsyncClient() as client:
            assert (await client.get(base + "/")).status_code == 200
        assert storage._redis is not None  # the decision connections
    assert storage._redis is None  # closed when the server's lifespan ended


@pytest.mark.redis
@pytest.mark.parametrize(
    ("policy", "status", "headers"),
    [("fail_open", 200, False), ("fail_closed", 503, False), ("fallback", 200, True)],
)
@pytest.mark.parametrize("by_url", [False, True])
async def test_a_redis_outage_never_becomes_a_500(
    own_redis: RedisServer, policy: StorageErrorPolicy, status: int, headers: bool, by_url: bool
) -> None:
    storage = own_redis.url if by_url else RedisStorage(own_redis.url)
    app = RateLimitMiddleware(hello_app(), "5/minute", storage=storage, on_storage_error=policy)
    async with asgi_client(app) as client:
        assert (await client.get("/")).status_code == 200
        own_redis.stop()
        down = await client.get("/")
        own_redis.start()
        wait_for_port(own_redis.port)
        back = await client.get("/")
    await app.aclose()
    assert down.status_code == status
    # Headers only when some limiter really decided (the local fallback did).
    assert ("ratelimit" in down.headers) is headers
    if status == 503:
        assert down.headers["content-type"] == "application/problem+json"
        assert down.headers["retry-after"] == "1"
    assert back.status_code == 200
    metrics = app.metrics()
    assert metrics["storage_errors"] or metrics["unchecked"] or policy == "fallback"
