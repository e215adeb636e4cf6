"""The demo service: a small FastAPI app wired with sergas_guard's web pieces.

``create_app()`` builds it (``sergas-guard demo`` serves it with uvicorn):

* the ASGI :class:`~sergas_guard.asgi.RateLimitMiddleware` with global limits and
  per-route rules (``GET /`` is small on purpose, so a few quick requests show a 429);
* a FastAPI :class:`~sergas_guard.fastapi.RateLimit` dependency on ``/search``;
* shadow mode on ``/reports`` (counted, never rejected; see ``/stats``);
* a circuit breaker in front of a flaky upstream on ``/upstream`` (503 when open);
* Kubernetes-style health routes (``/livez``, ``/readyz``, ``/health``).
"""

from __future__ import annotations

import random
from typing import Any

from fastapi import Depends, FastAPI, Request

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from sergas_guard.clock import Clock
from sergas_guard.fastapi import RateLimit, install_exception_handlers
from sergas_guard.health import HealthCheckRegistry, HealthStatus, ServiceHealthCheck, health_router
from sergas_guard.ratelimit.stores.base import RateLimitStorage
from sergas_guard.web import Rule
from sergas_guard.web.rules import resolve_storage

__all__ = ["ROUTES", "create_app", "try_line"]

#: (method, path, what it shows), for the banner and for ``GET /``.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/", "this explanation; limited to 10 per minute per client"),
    ("GET", "/items/{item_id}", "a per-route rule: 20 per minute per client"),
    ("GET", "/search?q=…", "a FastAPI dependency limit: 5 per minute per client"),
    ("GET", "/reports", "shadow mode: 3 per minute counted, never rejected"),
    ("GET", "/upstream?fail=true", "a circuit breaker: 3 failures open it for 15 s"),
    ("GET", "/stats", "rate-limit counters (shadow rejections) and the breaker's state"),
    ("GET", "/livez /readyz /health", "health routes, never rate limited"),
    ("*", "anything else", "the global limits: 100 per minute per client"),
)


class UpstreamError(RuntimeError):
    """The demo's simulated upstream failed."""


def _describe(base_url: str) -> dict[str, Any]:
    return {
        "service": "sergas-guard demo",
        "what": "Every response carries RateLimit-Policy and RateLimit headers "
        "(draft-ietf-httpapi-ratelimit-headers). Past a limit you get a 429 "
        "application/problem+json with Retry-After.",
        "routes": [{"method": m, "path": p, "shows": s} for m, p, s in ROUTES],
        "try": try_line(base_url),
    }


def try_line(base_url: str) -> str:
    """A shell line that sends 15 quick requests to ``GET /`` and prints their statuses."""
    return (
        f"for i in $(seq 15); do curl -s -o /dev/null -w '%{{http_code}} ' {base_url}/; done; echo"
    )


def create_app(
    storage: RateLimitStorage | str = "memory://", *, clock: Clock | None = None
) -> RateLimitMiddleware:
    """The demo service, as an ASGI app; ``storage`` is a storage or URL for every limit.

    The FastAPI app is ``returned.app``; the middleware is in ``app.state.rate_limits``.
    Raises ConfigurationError for an unknown storage URL.
    """
    shared = resolve_storage(storage, clock)
    api = FastAPI(title="sergas-guard demo", version="1")
    install_exception_handlers(api)

    breaker = CircuitBreaker(
        "demo-upstream",
        CircuitBreakerConfig(
            window_size=3, minimum_calls=3, failure_rate_threshold=100.0,
            wait_duration_in_open=15.0, permitted_calls_in_half_open=1,
        ),
    )  # fmt: skip
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("app", lambda: True, tags=["ready"]))
    registry.register(
        ServiceHealthCheck(
            "upstream",
            lambda: HealthStatus.DEGRADED if breaker.state is CircuitState.OPEN else True,
            critical=False,
        )
    )
    api.router.routes.extend(health_router(registry).routes)

    @api.get("/")
    async def explain(request: Request) -> dict[str, Any]:
        return _describe(str(request.base_url).rstrip("/"))

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": f"item {item_id}"}

    search_limit = RateLimit("5/minute", storage=shared, name="search")

    @api.get("/search", dependencies=[Depends(search_limit)])
    async def search(q: str = "") -> dict[str, Any]:
        return {"q": q, "results": [f"{q} {n}" for n in range(3)]}

    @api.get("/reports")
    async def reports() -> dict[str, Any]:
        return {"report": "shadow mode counts this route but never rejects it"}

    async def flaky(fail: bool) -> str:
        if fail or random.random() < 0.05:
            raise UpstreamError("upstream failed")
        return "upstream answered"

    @api.get("/upstream")
    async def upstream(fail: bool = False) -> dict[str, Any]:
        try:
            answer = await breaker.call(flaky, fail)
        except UpstreamError as exc:
            return {"error": str(exc), "breaker": breaker.state.value}
        return {"answer": answer, "breaker": breaker.state.value}

    @api.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        middleware: RateLimitMiddleware = request.app.state.rate_limits
        counters = middleware.metrics()
        counters.pop("limiters", None)
        return {"rate_limits": counters, "breaker": breaker.get_metrics()}

    rules = [
        Rule("/", "10/minute", methods="GET", name="home"),
        Rule("/items/{item_id}", "20/minute", methods="GET", name="items"),
        Rule("/reports", "3/minute", shadow=True, name="reports"),
        Rule("/search", exempt=True),  # limited by its dependency instead
        Rule("/livez", exempt=True),
        Rule("/readyz", exempt=True),
        Rule("/health/*", exempt=True),
    ]
    middleware = RateLimitMiddleware(api, "100/minute", rules, storage=shared, clock=clock)
    api.state.rate_limits = middleware
    return middleware
