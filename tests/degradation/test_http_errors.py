"""A switched-off feature over HTTP: 404 or 503 problem+json at every web edge.

FastAPI and Starlette through httpx's ASGI transport (and FastAPI once through a real
uvicorn), Flask through its test client, Django through its sync and async test
clients. The flags and the degradation level are real FeatureFlags and a real
DegradationManager in memory; each scenario sets them and requests one endpoint.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from fastapi import FastAPI
from flask import Flask
from flask import request as flask_request
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sergas_guard.clock import ManualClock
from sergas_guard.degradation import (
    DegradationLevel,
    DegradationManager,
    FeatureFlags,
    feature_flag,
)
from sergas_guard.degradation.http import (
    FEATURE_DISABLED_TYPE,
    SHED_REASONS,
    feature_disabled_exception_handler,
    feature_disabled_parts,
    feature_disabled_wsgi_response,
)
from sergas_guard.errors import FeatureDisabledError
from sergas_guard.fastapi import install_exception_handlers
from sergas_guard.problem import PROBLEM_CONTENT_TYPE
from sergas_guard.wsgi import install_flask_error_handlers
from tests.web import django_project
from tests.web.conftest import asgi_client, serving
from tests.web.django_project import GUARD_ERRORS, urlconf_module

django_project.configure()  # at import, as tests/web/test_django.py explains

ON = {"beta": "on"}
RESULTS = {"search": "results"}


def search_results() -> dict[str, str]:
    """The primary of the ``search`` service the manager calls."""
    return RESULTS


@dataclass
class World:
    """The flags and the manager every app of a test is wired to."""

    flags: FeatureFlags
    manager: DegradationManager


@pytest.fixture
def world() -> World:
    clock = ManualClock()
    flags = FeatureFlags(clock=clock)
    return World(flags, DegradationManager(feature_flags=flags, clock=clock))


@dataclass(frozen=True)
class Scenario:
    """Flags and level to set, the request to make, and the expected answer."""

    arrange: Callable[[World], Any]
    url: str
    status: int
    reason: str | None = None  # in the 503 body; None for 200 and 404

    @property
    def feature(self) -> str:
        return "search" if self.url.startswith("/service") else "beta"


def _level(level: DegradationLevel, **flag: Any) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        if flag:
            world.flags.register("beta", **flag)
        world.manager.set_degradation_level(level)

    return arrange


SCENARIOS = {
    "on": Scenario(lambda w: w.flags.register("beta"), "/feature?user=u1", 200),
    "disabled": Scenario(lambda w: w.flags.register("beta", enabled=False), "/feature", 404),
    "not_in_rollout": Scenario(
        lambda w: w.flags.register("beta", rollout_percentage=0), "/feature?user=u1", 404
    ),
    "denied": Scenario(
        lambda w: w.flags.register("beta", deny_users=["u1"]), "/feature?user=u1", 404
    ),
    "no_user_id": Scenario(
        lambda w: w.flags.register("beta", rollout_percentage=50), "/feature", 404
    ),
    "unknown": Scenario(lambda w: None, "/feature?user=u1", 404),
    "degraded": Scenario(
        _level(DegradationLevel.DEGRADED, enabled=True), "/feature?user=u1", 503, "degraded"
    ),
    "critical": Scenario(
        _level(DegradationLevel.CRITICAL, enabled=True), "/feature?user=u1", 503, "degraded"
    ),
    "essential_while_degraded": Scenario(
        _level(DegradationLevel.DEGRADED, essential=True), "/feature?user=u1", 200
    ),
    "maintenance": Scenario(_level(DegradationLevel.MAINTENANCE), "/service", 503, "maintenance"),
    "service_flag_off": Scenario(
        lambda w: w.flags.register("search", enabled=False), "/service", 404
    ),
    "service_on": Scenario(lambda w: None, "/service", 200),
}


def check(scenario: Scenario, status: int, headers: Any, body: bytes) -> None:
    """The answer ``scenario`` expects, whichever edge gave it."""
    assert status == scenario.status
    if status == 200:
        assert json.loads(body) in (ON, RESULTS)
        return
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    assert "retry-after" not in headers  # nobody knows when a level changes
    document = json.loads(body)
    if status == 404:
        # Exactly this, whatever the reason: nothing tells a rollout or a deny list.
        assert document == {
            "type": FEATURE_DISABLED_TYPE,
            "title": "Not Found",
            "status": 404,
            "detail": f"feature {scenario.feature!r} is not available",
            "feature": scenario.feature,
        }
    else:
        assert document["type"] == FEATURE_DISABLED_TYPE
        assert (document["status"], document["title"]) == (503, "Service Unavailable")
        assert (document["feature"], document["reason"]) == (scenario.feature, scenario.reason)
        assert repr(scenario.feature) in document["detail"]


# -- the apps -------------------------------------------------------------------------


def fastapi_app(world: World) -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/feature")
    @feature_flag("beta", flags=world.flags, user_id="user")
    async def feature(user: str | None = None) -> dict[str, str]:
        return ON

    @app.get("/service")
    async def service() -> dict[str, str]:
        answer: dict[str, str] = await world.manager.execute_with_fallback("search", search_results)
        return answer

    return app


def starlette_app(world: World) -> Starlette:
    # Sync endpoints (Starlette runs them in a thread), the user id read by a callable.
    @feature_flag("beta", flags=world.flags, user_id=lambda r: r.query_params.get("user"))
    def feature(request: Request) -> JSONResponse:
        return JSONResponse(ON)

    def service(request: Request) -> JSONResponse:
        answer = world.manager.execute_with_fallback_sync("search", search_results)
        return JSONResponse(answer)

    app = Starlette(routes=[Route("/feature", feature), Route("/service", service)])
    install_exception_handlers(app)
    return app


def flask_app(world: World) -> Flask:
    app = Flask(__name__)
    install_flask_error_handlers(app)

    @app.get("/feature")
    @feature_flag("beta", flags=world.flags, user_id=lambda: flask_request.args.get("user"))
    def feature() -> dict[str, str]:
        return ON

    @app.get("/service")
    def service() -> dict[str, str]:
        answer: dict[str, str] = world.manager.execute_with_fallback_sync("search", search_results)
        return answer

    return app


def django_urls(world: World) -> types.ModuleType:
    """A URLconf of sync views under ``/`` and the same views async under ``/async/``."""

    def user_of(request: HttpRequest) -> str | None:
        user: str | None = request.GET.get("user")  # Django ships no type hints
        return user

    @feature_flag("beta", flags=world.flags, user_id=user_of)
    def feature(request: HttpRequest) -> JsonResponse:
        return JsonResponse(ON)

    def service(request: HttpRequest) -> JsonResponse:
        answer = world.manager.execute_with_fallback_sync("search", search_results)
        return JsonResponse(answer)

    @feature_flag("beta", flags=world.flags, user_id=user_of)
    async def async_feature(request: HttpRequest) -> JsonResponse:
        return JsonResponse(ON)

    async def async_service(request: HttpRequest) -> JsonResponse:
        answer = await world.manager.execute_with_fallback("search", search_results)
        return JsonResponse(answer)

    return urlconf_module(
        "tests.degradation.django_feature_urls",
        [
            path("feature", feature),
            path("service", service),
            path("async/feature", async_feature),
            path("async/service", async_service),
        ],
    )


def django_settings(world: World) -> Any:
    return override_settings(
        SERGAS_GUARD_RATELIMIT={}, MIDDLEWARE=[GUARD_ERRORS], ROOT_URLCONF=django_urls(world)
    )


# -- the edges ------------------------------------------------------------------------


@pytest.mark.parametrize("make_app", [fastapi_app, starlette_app], ids=["fastapi", "starlette"])
@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_asgi_edges(
    world: World, make_app: Callable[[World], Any], scenario: Scenario
) -> None:
    scenario.arrange(world)
    async with asgi_client(make_app(world)) as http:
        response = await http.get(scenario.url)
    check(scenario, response.status_code, response.headers, response.content)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_flask(world: World, scenario: Scenario) -> None:
    scenario.arrange(world)
    response = flask_app(world).test_client().get(scenario.url)
    headers = {name.lower(): value for name, value in response.headers.items()}
    check(scenario, response.status_code, headers, response.data)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_django_sync_views(world: World, scenario: Scenario) -> None:
    scenario.arrange(world)
    with django_settings(world):
        response = Client().get(scenario.url)
    check(scenario, response.status_code, response.headers, response.content)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_django_async_views(world: World, scenario: Scenario) -> None:
    scenario.arrange(world)
    with django_settings(world):
        response = await AsyncClient().get("/async" + scenario.url)
    check(scenario, response.status_code, response.headers, response.content)


def test_fastapi_over_uvicorn(world: World) -> None:
    world.flags.register("beta", enabled=False)
    world.flags.register("gamma")
    with serving(fastapi_app(world)) as base_url, httpx.Client(base_url=base_url) as http:
        hidden = http.get("/feature?user=u1")
        world.flags.register("beta", overwrite=True)
        world.manager.set_degradation_level(DegradationLevel.DEGRADED)
        shed = http.get("/feature?user=u1")
        world.manager.set_degradation_level(DegradationLevel.NORMAL)
        back = http.get("/feature?user=u1")
    check(SCENARIOS["disabled"], hidden.status_code, hidden.headers, hidden.content)
    check(SCENARIOS["degraded"], shed.status_code, shed.headers, shed.content)
    assert (back.status_code, back.json()) == (200, ON)


# -- outside the edges ------------------------------------------------------------------


def test_a_plain_call_still_raises_the_error(world: World) -> None:
    # The edges' handlers are installed, but this call goes through none of them.
    install_exception_handlers(FastAPI())
    install_flask_error_handlers(Flask(__name__))
    world.flags.register("beta", rollout_percentage=0)

    @feature_flag("beta", flags=world.flags, user_id="user")
    def beta(user: str) -> str:
        return "on"

    with pytest.raises(FeatureDisabledError) as raised:
        beta("u1")
    assert (raised.value.flag, raised.value.reason) == ("beta", "not_in_rollout")


async def test_the_starlette_handler_refuses_other_exceptions() -> None:
    with pytest.raises(TypeError):
        await feature_disabled_exception_handler(None, ValueError("x"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "line"), [("denied", "404 Not Found"), ("maintenance", "503 Service Unavailable")]
)
def test_wsgi_status_lines(reason: str, line: str) -> None:
    status, headers, body = feature_disabled_wsgi_response(FeatureDisabledError("x", reason=reason))
    assert status == line
    assert (headers, body) == feature_disabled_parts(FeatureDisabledError("x", reason=reason))[1:]


# A reason no source produces today must still be mapped, and mapped to the hiding 404.
reasons = st.one_of(st.sampled_from(sorted(SHED_REASONS)), st.text(max_size=20))


@given(flag=st.text(min_size=1, max_size=30), reason=reasons, other=reasons)
def test_status_by_reason_and_404s_that_hide_it(flag: str, reason: str, other: str) -> None:
    status, _, body = feature_disabled_parts(FeatureDisabledError(flag, reason=reason))
    document = json.loads(body)
    assert (status, document["status"], document["feature"]) == (
        503 if reason in SHED_REASONS else 404,
        status,
        flag,
    )
    assert ("reason" in document) == (status == 503)
    if status == 503:
        assert document["reason"] == reason
    elif other not in SHED_REASONS:  # two hidden reasons: not a byte apart
        assert body == feature_disabled_parts(FeatureDisabledError(flag, reason=other))[2]
