"""The operators' router, through httpx's ASGI transport, mounted in a Starlette app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount

from sergas_guard.clipping import LOG_VALUE_LIMIT
from sergas_guard.degradation import (
    DegradationLevel,
    DegradationManager,
    FeatureFlags,
    degradation_router,
)
from sergas_guard.degradation.json_body import MAX_BODY_BYTES
from sergas_guard.errors import ConfigurationError
from sergas_guard.problem import PROBLEM_CONTENT_TYPE
from sergas_guard.validation import MAX_TEXT_LENGTH
from tests.web.conftest import serving

TOKEN = "s3cret-operator-token"


async def require_operator(request: Request) -> str | None:
    """The application's own authentication: a bearer token naming an operator."""
    if request.headers.get("authorization") == f"Bearer {TOKEN}":
        return "alice"
    return None


@pytest.fixture
def manager(tmp_path: Path) -> DegradationManager:
    manager = DegradationManager(feature_flags=FeatureFlags(path=tmp_path / "flags.json"))
    manager.feature_flags.register("recommendations", description="product recommendations")
    manager.feature_flags.register("checkout", essential=True)
    return manager


@pytest.fixture
async def client(manager: DegradationManager) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(
        routes=[Mount("/ops/degradation", degradation_router(manager, auth=require_operator))]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test/ops/degradation",
        headers={"authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


ROUTES = [
    ("GET", "/"),
    ("GET", "/level"),
    ("PUT", "/level"),
    ("GET", "/flags"),
    ("GET", "/flags/checkout"),
    ("PATCH", "/flags/checkout"),
    ("PUT", "/flags/new"),
    ("DELETE", "/flags/checkout"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_requests_without_authentication(
    client: httpx.AsyncClient, manager: DegradationManager, method: str, path: str
) -> None:
    for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"}):
        response = await client.request(
            method, path, headers=headers, json={"level": "maintenance", "enabled": False}
        )
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers["www-authenticate"] == "Bearer"
    # Nothing changed.
    assert manager.manual_level is DegradationLevel.NORMAL
    assert manager.feature_flags.get("checkout").enabled  # type: ignore[union-attr]
    assert manager.feature_flags.get("new") is None


def test_the_router_cannot_be_built_without_authentication(manager: DegradationManager) -> None:
    with pytest.raises(ConfigurationError, match="auth"):
        degradation_router(manager)


async def test_read_and_set_the_level(
    client: httpx.AsyncClient, manager: DegradationManager
) -> None:
    response = await client.get("/level")
    assert response.json()["level"] == "normal"
    response = await client.put("/level", json={"level": "degraded", "reason": "incident 42"})
    assert response.status_code == 200
    assert response.json()["level"] == "degraded"
    assert manager.level is DegradationLevel.DEGRADED
    flags = (await client.get("/flags")).json()["flags"]
    assert {f["name"]: f["suppressed"] for f in flags} == {
        "checkout": False,
        "recommendations": True,
    }


async def test_bad_requests_get_problem_details(client: httpx.AsyncClient) -> None:
    cases = [
        ("PUT", "/level", b'{"level": "panic"}', "unknown degradation level"),
        ("PUT", "/level", b"{}", "needs a 'level'"),
        ("PUT", "/level", b"not json", "not valid JSON"),
        ("PATCH", "/flags/checkout", b'{"rollout_percentage": 140}', "rollout_percentage"),
        ("PATCH", "/flags/checkout", b'{"colour": "red"}', "unknown fields: colour"),
        ("PATCH", "/flags/checkout", b"[]", "JSON object"),
    ]
    for method, path, body, detail in cases:
        response = await client.request(method, path, content=body)
        assert response.status_code == 400, (path, body)
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert detail in response.json()["detail"]


async def test_list_and_change_flags(
    client: httpx.AsyncClient, manager: DegradationManager, tmp_path: Path
) -> None:
    listing = (await client.get("/flags")).json()["flags"]
    assert [f["name"] for f in listing] == ["checkout", "recommendations"]

    response = await client.patch(
        "/flags/recommendations", json={"rollout_percentage": 10, "allow_users": ["vip"]}
    )
    assert response.status_code == 200
    assert response.json()["rollout_percentage"] == 10
    assert manager.feature_flags.is_enabled("recommendations", user_id="vip")
    on_disk = json.loads((tmp_path / "flags.json").read_text())["flags"]
    assert on_disk["recommendations"]["allow_users"] == ["vip"]  # persisted

    assert (await client.get("/flags/recommendations")).json()["allow_users"] == ["vip"]
    missing = await client.patch("/flags/nope", json={"enabled": False})
    assert missing.status_code == 404
    assert (await client.get("/flags/nope")).status_code == 404

    created = await client.put("/flags/dark_mode", json={"enabled": False})
    assert created.status_code == 200
    assert created.json()["enabled"] is False
    assert manager.feature_flags.get("dark_mode") is not None

    assert (await client.delete("/flags/dark_mode")).status_code == 204
    assert manager.feature_flags.get("dark_mode") is None
    assert "dark_mode" not in json.loads((tmp_path / "flags.json").read_text())["flags"]
    assert (await client.delete("/flags/dark_mode")).status_code == 404


async def test_overview(client: httpx.AsyncClient, manager: DegradationManager) -> None:
    body = (await client.get("/")).json()
    assert body["level"] == "normal"
    assert {f["name"] for f in body["flags"]} == {"checkout", "recommendations"}


async def test_the_authenticator_may_raise_http_exceptions(manager: DegradationManager) -> None:
    def forbid(request: Request) -> str:
        raise HTTPException(403, "operators only")

    app = Starlette(routes=[Mount("/ops", degradation_router(manager, auth=forbid))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.get("/ops/level")
    assert response.status_code == 403
    assert response.json()["detail"] == "operators only"


@pytest.mark.redis
async def test_changes_through_the_router_reach_every_worker(redis_url: str) -> None:
    from sergas_guard.ratelimit.stores.redis import RedisStorage

    stores = [RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0) for _ in range(2)]
    served = DegradationManager(feature_flags=FeatureFlags(storage=stores[0]))
    served.feature_flags.register("recommendations")
    other_worker = FeatureFlags(storage=stores[1], refresh_interval=0)
    app = Starlette(routes=[Mount("/ops", degradation_router(served, auth=require_operator))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test/ops",
        headers={"authorization": f"Bearer {TOKEN}"},
    ) as client:
        response = await client.patch("/flags/recommendations", json={"enabled": False})
    assert response.status_code == 200
    assert not await other_worker.is_enabled_async("recommendations")
    for store in stores:
        await store.aclose()


# --- issue 12, finding 8: bounded bodies, JSON depth and log lines, through uvicorn ---


@pytest.fixture
def served(manager: DegradationManager) -> Iterator[str]:
    """The router under a real uvicorn (as the app: a Mount would refuse a newline in
    the path before the router sees it); yields its base URL."""
    with serving(degradation_router(manager, auth=require_operator)) as base:
        yield base


def operator(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 60_000, "nested deeper than"),  # was a RecursionError: 500
        (b'{"level": "degraded", "reason": ' + b"[" * 9 + b"]" * 9 + b"}", "nested deeper"),
        (b'{"level": NaN}', "not valid JSON"),
        (b'{"level": "\xff"}', "not valid JSON"),
        (b"", "JSON object"),
    ],
)
async def test_bodies_that_are_no_plain_json_object_get_400(
    served: str, manager: DegradationManager, body: bytes, detail: str
) -> None:
    async with operator(served) as http:
        response = await http.put("/level", content=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert detail in response.json()["detail"]
    assert manager.level is DegradationLevel.NORMAL


async def test_a_body_over_the_bound_gets_413_however_it_is_framed(
    served: str, manager: DegradationManager
) -> None:
    # Finding 8: a 5 MB description was accepted and logged whole at WARNING.
    huge = json.dumps({"description": "x" * 5_000_000}).encode()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: streamed
        for start in range(0, len(huge), 65_536):
            yield huge[start : start + 65_536]

    async with operator(served) as http:
        announced = await http.patch("/flags/recommendations", content=huge)
        brackets = await http.put("/level", content=b"[" * 100_000)  # the finding's body
        streamed = await http.patch("/flags/recommendations", content=chunked())
        just_over = await http.patch(
            "/flags/recommendations",
            content=json.dumps({"description": "x" * MAX_BODY_BYTES}).encode(),
        )
    for response in (announced, streamed, just_over, brackets):
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert str(MAX_BODY_BYTES) in response.json()["detail"]
    flag = manager.feature_flags.get("recommendations")
    assert flag is not None
    assert flag.description == "product recommendations"


async def test_what_the_router_logs_is_one_bounded_line(
    served: str, manager: DegradationManager, caplog: pytest.LogCaptureFixture
) -> None:
    description = "d" * MAX_TEXT_LENGTH  # within the bound: accepted, not logged whole
    with caplog.at_level("WARNING", logger="sergas_guard.degradation"):
        async with operator(served) as http:
            too_long = await http.patch(
                "/flags/recommendations", json={"description": description + "d"}
            )
            changed = await http.patch("/flags/recommendations", json={"description": description})
            forged = await http.put("/flags/x%0AFAKE: operator root", json={"enabled": True})
            level = await http.put("/level", json={"level": "degraded", "reason": "r" * 50_000})
    assert [changed.status_code, forged.status_code, level.status_code] == [200, 200, 200]
    assert too_long.status_code == 400  # a description over the bound is refused, not stored
    assert too_long.headers["content-type"] == PROBLEM_CONTENT_TYPE
    flag = manager.feature_flags.get("recommendations")
    assert flag is not None
    assert flag.description == description
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 4  # two flag changes, the level set, the manager's level change
    for message in records:
        assert len(message) <= 2 * LOG_VALUE_LIMIT + 200
        assert "\n" not in message
    assert any("x\\x0aFAKE: operator root" in m for m in records)
