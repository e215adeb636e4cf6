"""FastAPI: the RateLimit dependency, @rate_limited endpoints, install_exception_handlers.

This module evaluates annotations eagerly; test_fastapi_future.py repeats the endpoint
cases under ``from __future__ import annotations``.
"""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.errors import CircuitOpenError, ConfigurationError
from sergas_guard.fastapi import RateLimit, install_exception_handlers
from sergas_guard.ratelimit import RateLimiter, rate_limited
from sergas_guard.web import client_ip
from tests.web.conftest import asgi_client

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


class Item(BaseModel):
    name: str
    price: float


def current_user(x_user: Annotated[str, Header()] = "anon") -> str:
    return x_user


def build_app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)
    search_limit = RateLimit("2/minute")

    @app.get("/search", dependencies=[Depends(search_limit)])
    async def search(q: str) -> dict[str, str]:
        return {"q": q}

    @app.get("/raw", dependencies=[Depends(search_limit)])
    async def raw() -> Response:
        return PlainTextResponse("raw")  # a returned Response still gets the headers

    @app.post("/items")
    @rate_limited("2/minute", key=client_ip)
    async def create(
        item: Item, user: Annotated[str, Depends(current_user)], tax: float = 0.0
    ) -> dict[str, Any]:
        return {"name": item.name, "total": item.price + tax, "user": user}

    @app.get("/sync/{item_id}")
    @rate_limited("1/minute", key=client_ip)
    def read_sync(item_id: int, verbose: bool = False) -> dict[str, Any]:
        return {"id": item_id, "verbose": verbose}

    @app.get("/typed")
    async def typed(limit: Annotated[None, Depends(RateLimit("1/minute"))]) -> str:
        return "ok"

    return app


async def test_dependency_headers_and_429() -> None:
    async with asgi_client(build_app()) as client:
        responses = [await client.get("/search", params={"q": "x"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].json() == {"q": "x"}
    assert responses[0].headers["ratelimit-policy"] == '"dependency";q=2;w=60'
    assert responses[1].headers["ratelimit"].startswith('"dependency";r=0;t=')
    rejected = responses[2]
    assert rejected.headers["content-type"] == "application/problem+json"
    assert rejected.json()["type"] == QUOTA_EXCEEDED
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.headers["ratelimit"].startswith('"dependency";r=0;t=')


async def test_each_route_has_its_own_budget_and_responses_returned_directly_get_headers() -> None:
    async with asgi_client(build_app()) as client:
        searches = [(await client.get("/search?q=1")).status_code for _ in range(2)]
        raw = await client.get("/raw")
    assert searches == [200, 200]
    assert raw.status_code == 200
    assert raw.text == "raw"
    assert raw.headers["ratelimit"].startswith('"dependency";r=1;')


async def test_rate_limited_endpoint_keeps_body_params_and_annotated_depends() -> None:
    async with asgi_client(build_app()) as client:
        payload = {"name": "pen", "price": 2.5}
        created = await client.post("/items", params={"tax": 1}, json=payload,
                                    headers={"x-user": "ann"})  # fmt: skip
        invalid = await client.post("/items", json={"name": "pen"})
        second = await client.post("/items", json=payload)
        third = await client.post("/items", json=payload)
    assert created.status_code == 200
    assert created.json() == {"name": "pen", "total": 3.5, "user": "ann"}
    assert ";r=1;" in created.headers["ratelimit"]
    assert invalid.status_code == 422  # validation runs before the endpoint is called
    assert [second.status_code, third.status_code] == [200, 429]
    assert third.headers["content-type"] == "application/problem+json"
    assert third.headers["ratelimit"].startswith('"tests.web.test_fastapi.')
    assert "retry-after" in third.headers


async def test_rate_limited_sync_endpoint_with_path_and_query() -> None:
    async with asgi_client(build_app()) as client:
        first = await client.get("/sync/7", params={"verbose": "true"})
        second = await client.get("/sync/7")
    assert first.json() == {"id": 7, "verbose": True}
    assert second.status_code == 429


async def test_annotated_dependency_form() -> None:
    async with asgi_client(build_app()) as client:
        statuses = [(await client.get("/typed")).status_code for _ in range(2)]
    assert statuses == [200, 429]


async def test_rate_limited_keys_by_client_through_the_request_context() -> None:
    app = build_app()
    async with asgi_client(app, client=("192.0.2.1", 1)) as one:
        assert (await one.get("/sync/1")).status_code == 200
        assert (await one.get("/sync/1")).status_code == 429
    async with asgi_client(app, client=("192.0.2.2", 1)) as two:
        assert (await two.get("/sync/1")).status_code == 200


async def test_dependency_without_install_still_answers_429_with_headers() -> None:
    app = FastAPI()

    @app.get("/", dependencies=[Depends(RateLimit("1/minute"))])
    async def home() -> str:
        return "home"

    async with asgi_client(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.headers["ratelimit"].startswith('"dependency";r=0;')
    assert second.status_code == 429
    assert "retry-after" in second.headers
    assert second.headers["ratelimit"].startswith('"dependency";r=0;')


async def test_middleware_and_dependency_headers_merge() -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/", dependencies=[Depends(RateLimit("2/minute"))])
    async def home() -> str:
        return "home"

    wrapped = RateLimitMiddleware(app, "100/minute")
    async with asgi_client(wrapped) as client:
        first = await client.get("/")
        await client.get("/")
        third = await client.get("/")
    assert first.headers["ratelimit-policy"] == '"default";q=100;w=60, "dependency";q=2;w=60'
    assert first.headers["ratelimit"].startswith('"dependency";r=1;')
    assert third.status_code == 429
    assert len(third.headers.get_list("ratelimit")) == 1
    assert third.json()["violated-policies"] == ["dependency"]


async def test_exception_handlers_on_plain_starlette() -> None:
    limiter = RateLimiter("1/minute", name="manual")

    async def endpoint(request: Request) -> Response:
        await limiter.acquire("someone")  # raises RateLimitExceeded the second time
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    install_exception_handlers(app)
    async with asgi_client(app) as client:
        assert (await client.get("/")).status_code == 200
        rejected = await client.get("/")
    assert rejected.status_code == 429
    assert rejected.headers["content-type"] == "application/problem+json"
    assert rejected.json()["detail"].startswith("Rate limit exceeded (1 per 60s")
    assert int(rejected.headers["retry-after"]) >= 1


def test_rate_limited_key_outside_a_request_is_a_clear_error() -> None:
    @rate_limited("1/minute", key=client_ip)
    def plain() -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="no request is being served"):
        plain()


async def test_circuit_open_errors_become_503_through_the_same_install() -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/")
    async def refused() -> str:
        raise CircuitOpenError("payments", retry_after=4.2)

    async with asgi_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    assert response.json()["circuit"] == "payments"
