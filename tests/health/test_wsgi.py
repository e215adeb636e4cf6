"""The WSGI adapter in a Flask app: same routes, one background loop, shared runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from sergas_guard.health import (
    CacheHealthCheck,
    HealthCheckRegistry,
    HealthRequest,
    HealthStatus,
    ServiceHealthCheck,
)
from sergas_guard.health.wsgi import HealthWSGIApp


def _flask(health: HealthWSGIApp) -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/ops": health})  # type: ignore[method-assign]
    return app


@pytest.fixture
def registry() -> HealthCheckRegistry:
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("db", lambda: True))
    registry.register(ServiceHealthCheck("search", lambda: False, critical=False, tags=["ext"]))
    return registry


@pytest.fixture
def health(registry: HealthCheckRegistry) -> Iterator[HealthWSGIApp]:
    app = HealthWSGIApp(registry, details=lambda r: r.headers.get("x-ops") == "yes")
    yield app
    app.close()


def test_routes_in_flask(health: HealthWSGIApp) -> None:
    client = _flask(health).test_client()
    assert client.get("/hello").text == "hi"
    live = client.get("/ops/livez")
    assert (live.status_code, live.json) == (200, {"status": "pass"})
    assert live.headers["content-type"] == "application/health+json"
    assert live.headers["cache-control"] == "no-store"
    ready = client.get("/ops/readyz", headers={"accept": "application/json"})
    assert (ready.status_code, ready.json) == (200, {"status": "healthy"})
    everything = client.get("/ops/health")
    assert (everything.status_code, everything.json) == (200, {"status": "warn"})
    detailed = client.get("/ops/health", headers={"x-ops": "yes"}).json
    assert detailed is not None
    assert detailed["checks"]["search:status"][0]["status"] == "fail"
    text = client.get("/ops/health/search?verbose", headers={"x-ops": "yes"})
    assert "[FAIL] search (non-critical)" in text.text
    assert client.get("/ops/health/nope").status_code == 404
    assert client.get("/ops/elsewhere").status_code == 404
    assert client.post("/ops/health").status_code == 405
    assert client.head("/ops/livez").data == b""


def test_the_authoriser_receives_the_environ(registry: HealthCheckRegistry) -> None:
    seen: list[HealthRequest] = []

    def admit(request: HealthRequest) -> bool:
        seen.append(request)
        return False

    health = HealthWSGIApp(registry, details=admit)
    try:
        _flask(health).test_client().get("/ops/health?x=1")
    finally:
        health.close()
    assert seen[0].raw["PATH_INFO"] == "/health"
    assert seen[0].query == {"x": "1"}


def test_threads_share_one_run_on_the_background_loop() -> None:
    gate = threading.Event()
    runs = 0

    def slow() -> bool:
        nonlocal runs
        runs += 1
        gate.wait(5)
        return True

    # A long TTL keeps late arrivals from starting a second run once the first is over;
    # those arriving during the run must join it (a second run would also be refused by
    # the check's own one-thread guard and answer 503).
    registry = HealthCheckRegistry(cache_ttl=60)
    registry.register(ServiceHealthCheck("slow", slow))
    health = HealthWSGIApp(registry)
    app = _flask(health)
    try:
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(app.test_client().get, "/ops/health") for _ in range(20)]
            while runs == 0:
                threading.Event().wait(0.01)
            threading.Event().wait(0.1)  # let more requests arrive during the run
            gate.set()
            statuses = {future.result().status_code for future in futures}
    finally:
        health.close()
    assert statuses == {200}
    assert runs == 1


@pytest.mark.redis
def test_real_redis_through_flask(redis_url: str) -> None:
    registry = HealthCheckRegistry()
    registry.register(CacheHealthCheck("cache", redis_url, timeout=5, degraded_latency=2.0))
    health = HealthWSGIApp(registry, details="always")
    try:
        document = _flask(health).test_client().get("/ops/health").json
    finally:
        health.close()
    assert document is not None
    entry = document["checks"]["cache:responseTime"][0]
    assert entry["status"] == HealthStatus.HEALTHY.health_json
    assert entry["observedUnit"] == "ms"
