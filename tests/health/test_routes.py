"""health_router through httpx's ASGI transport and a real uvicorn, in Starlette and FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

from sergas_guard.errors import HealthCheckError
from sergas_guard.health import (
    CacheHealthCheck,
    HealthCheckRegistry,
    HealthRequest,
    HealthStatus,
    ServiceHealthCheck,
    health_router,
)
from tests.health.conftest import CountingDatabaseCheck
from tests.servers import PostgresServer, RedisServer

HEALTH_JSON = "application/health+json"
Serve = Callable[[Any], contextlib.AbstractContextManager[str]]


def _registry(**statuses: HealthStatus | bool) -> HealthCheckRegistry:
    registry = HealthCheckRegistry()
    for name, status in statuses.items():
        tags = ["ready"] if not name.startswith("ext") else ["external"]
        registry.register(ServiceHealthCheck(name, lambda s=status: s, tags=tags))
    return registry


@contextlib.asynccontextmanager
async def client_for(app: Any, base: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as client:
        yield client


def _starlette(registry: HealthCheckRegistry, **options: Any) -> Starlette:
    app = Starlette()
    app.routes.extend(health_router(registry, **options).routes)
    return app


async def test_routes_status_codes_and_headers() -> None:
    registry = _registry(db=True, ext_search=False)
    async with client_for(_starlette(registry)) as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")
        everything = await client.get("/health")
        one = await client.get("/health/ext_search")
        missing = await client.get("/health/nope")
    assert (live.status_code, live.json()) == (200, {"status": "pass"})
    assert (ready.status_code, ready.json()) == (200, {"status": "pass"})  # db only
    assert (everything.status_code, everything.json()) == (503, {"status": "fail"})
    assert (one.status_code, one.json()) == (503, {"status": "fail"})
    for response in (live, ready, everything, one):
        assert response.headers["content-type"] == HEALTH_JSON
        assert response.headers["cache-control"] == "no-store"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "nope" in missing.json()["detail"]


async def test_livez_runs_no_dependency_checks() -> None:
    calls = 0

    def db() -> bool:
        nonlocal calls
        calls += 1
        return False

    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("db", db))
    async with client_for(_starlette(registry)) as client:
        assert (await client.get("/livez")).status_code == 200
        assert calls == 0
        assert (await client.get("/readyz")).status_code == 503
        assert calls == 1


async def test_degraded_is_200_and_the_status_map_is_configurable() -> None:
    registry = _registry(db=HealthStatus.DEGRADED)
    async with client_for(_starlette(registry)) as client:
        response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "warn"})
    custom = _starlette(registry, status_codes={HealthStatus.DEGRADED: 299})
    async with client_for(custom) as client:
        assert (await client.get("/health")).status_code == 299
    with pytest.raises(HealthCheckError):
        health_router(registry, status_codes={HealthStatus.DEGRADED: 42})


async def test_details_always_in_every_format() -> None:
    registry = _registry(db=True, ext_search=False)
    app = _starlette(registry, details="always", service={"serviceId": "shop"})
    async with client_for(app) as client:
        document = (await client.get("/health", headers={"accept": HEALTH_JSON})).json()
        plain = await client.get("/health", headers={"accept": "application/json"})
        text = await client.get("/health?verbose")
    assert document["serviceId"] == "shop"
    assert set(document["checks"]) == {"db:status", "ext_search:status"}
    entry = document["checks"]["ext_search:status"][0]
    assert entry["status"] == "fail"
    assert entry["componentType"] == "component"
    assert entry["output"] == "check returned False"
    assert plain.headers["content-type"] == "application/json"
    summary = plain.json()
    assert (summary["status"], summary["total_checks"], summary["unhealthy"]) == ("unhealthy", 2, 1)
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.startswith("status: unhealthy\n")
    assert "[FAIL] ext_search" in text.text


async def test_anonymous_callers_get_the_status_only_by_default() -> None:
    app = _starlette(_registry(db=True))
    async with client_for(app) as client:
        assert (await client.get("/health", headers={"accept": "application/json"})).json() == {
            "status": "healthy"
        }
        assert (await client.get("/health?verbose=1")).text == "status: healthy\n"


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_an_authoriser_decides_who_sees_details(asynchronous: bool) -> None:
    seen: list[HealthRequest] = []

    def sync_admit(request: HealthRequest) -> bool:
        seen.append(request)
        return request.headers.get("authorization") == "Bearer ops"

    async def async_admit(request: HealthRequest) -> bool:
        return sync_admit(request)

    app = _starlette(_registry(db=True), details=async_admit if asynchronous else sync_admit)
    async with client_for(app) as client:
        anonymous = (await client.get("/health")).json()
        admitted = (await client.get("/health", headers={"authorization": "Bearer ops"})).json()
    assert anonymous == {"status": "pass"}
    assert "db:status" in admitted["checks"]
    assert seen[0].raw is not None  # the Starlette request, for framework-specific auth
    assert seen[0].path == "/health"


async def test_a_failing_authoriser_shows_nothing() -> None:
    def broken(request: HealthRequest) -> bool:
        raise RuntimeError("auth service down")

    async with client_for(_starlette(_registry(db=True), details=broken)) as client:
        response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "pass"})


async def test_tag_groups_have_routes_of_their_own() -> None:
    registry = _registry(db=True, ext_search=False)
    app = _starlette(registry, groups={"external": ["external"]}, details="always")
    async with client_for(app) as client:
        group = (await client.get("/health/external")).json()
    assert list(group["checks"]) == ["ext_search:status"]
    with pytest.raises(HealthCheckError):
        health_router(registry, groups={"a/b": ["x"]})


async def test_mounted_in_fastapi_under_a_prefix() -> None:
    app = FastAPI()

    @app.get("/items")
    async def items() -> list[int]:
        return [1]

    app.mount("/ops", health_router(_registry(db=True), details="always"))
    async with client_for(app) as client:
        assert (await client.get("/items")).json() == [1]
        ready = await client.get("/ops/readyz")
        check = await client.get("/ops/health/db")
    assert ready.status_code == 200
    assert ready.headers["content-type"] == HEALTH_JSON
    assert check.json()["checks"]["db:status"][0]["status"] == "pass"


async def _count_in_log(server: PostgresServer, marker: str) -> int:
    log = await asyncio.to_thread((server.datadir / "server.log").read_text, errors="replace")
    return log.count(marker)


@pytest.mark.postgres
async def test_a_thousand_requests_cause_one_query_per_ttl(postgres: PostgresServer) -> None:
    # Counted twice: by a wrapper around the real check and by PostgreSQL itself, which
    # logs every statement run in this database.
    database = f"sg_count_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {database}")
        await admin.execute(f"ALTER DATABASE {database} SET log_statement = 'all'")
    finally:
        await admin.close()
    marker = f"probe-{uuid.uuid4().hex}"
    check = CountingDatabaseCheck(
        "db", postgres.dsn(database=database), query=f"SELECT 1 /* {marker} */"
    )
    registry = HealthCheckRegistry(cache_ttl=60)
    registry.register(check)
    async with client_for(_starlette(registry)) as client:
        responses = await asyncio.gather(*(client.get("/health") for _ in range(1000)))
        assert {r.status_code for r in responses} == {200}
        assert check.probes == 1
        assert await _count_in_log(postgres, marker) == 1
        await asyncio.gather(*(client.get("/readyz") for _ in range(100)))
        assert check.probes == 1  # still within the TTL


@pytest.mark.redis
async def test_a_frozen_redis_cannot_hold_the_endpoint(
    own_redis: RedisServer, uvicorn_app: Serve
) -> None:
    registry = HealthCheckRegistry(timeout=2)
    registry.register(CacheHealthCheck("cache", own_redis.url, timeout=0.3))
    registry.register(ServiceHealthCheck("app", lambda: True))
    app = _starlette(registry, details="always")
    with uvicorn_app(app) as base:
        own_redis.pause()
        try:
            # The client gives up after 3 s: an endpoint waiting on Redis would fail here.
            async with httpx.AsyncClient(base_url=base, timeout=3) as client:
                response = await client.get("/health")
        finally:
            own_redis.resume()
    assert response.status_code == 503
    document = response.json()
    assert document["status"] == "fail"
    assert "timed out" in document["checks"]["cache:responseTime"][0]["output"]
    assert document["checks"]["app:status"][0]["status"] == "pass"


@pytest.mark.redis
async def test_through_real_uvicorn_healthy(redis_url: str, uvicorn_app: Serve) -> None:
    registry = HealthCheckRegistry()
    registry.register(CacheHealthCheck("cache", redis_url, timeout=5, degraded_latency=2.0))
    with uvicorn_app(_starlette(registry)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            response = await client.get("/readyz", headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(response.text) == {"status": "healthy"}
