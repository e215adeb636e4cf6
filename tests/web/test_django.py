"""Django middleware: Django's test clients for behaviour, a real WSGI server and a
real Redis for exact counts and outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.module_loading import import_string
from fastapi import FastAPI

from sergas_guard.clock import ManualClock
from sergas_guard.django import GuardSettings
from sergas_guard.errors import CircuitOpenError, ConfigurationError, RateLimitExceeded
from sergas_guard.fastapi import install_exception_handlers
from sergas_guard.storage import MemoryStorage, RedisStorage
from sergas_guard.web import RequestInfo, authenticated_user
from tests.servers import RedisServer
from tests.web import django_project
from tests.web.conftest import Serve, asgi_client, wsgi_serving
from tests.web.django_project import GUARD_ERRORS, HEADER_LOGIN, RATE_LIMIT

# At import, not in a fixture: once this module is collected, django.conf.settings (a
# lazy proxy) exists, and code that inspects every object (gc.get_objects) in other
# tests would make an unconfigured one raise ImproperlyConfigured.
django_project.configure()

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
DECORATED_POLICY = "tests.web.django_project.urlconf.<locals>.decorated"


@contextlib.contextmanager
def project(middleware: Sequence[str] = (RATE_LIMIT, GUARD_ERRORS), **guard: Any) -> Iterator[None]:
    """Settings for one test: these middlewares, ``guard`` as SERGAS_GUARD_RATELIMIT,
    and a fresh URLconf. Clients made inside build their middlewares from them."""
    with override_settings(
        SERGAS_GUARD_RATELIMIT=guard,
        MIDDLEWARE=list(middleware),
        ROOT_URLCONF=django_project.urlconf(),
    ):
        yield


def from_peer(address: str, **headers: str) -> dict[str, Any]:
    """Client.get keyword arguments for a request from ``address``."""
    return {"REMOTE_ADDR": address, "headers": headers}


def by_tenant(request: RequestInfo) -> str:
    """A key function named by dotted path in the tests' settings."""
    return "tenant:" + (request.header("x-tenant") or "none")


def busy(request: RequestInfo, decision: Any) -> HttpResponse:
    """An on_reject callback named by dotted path in the tests' settings."""
    return HttpResponse("busy", status=429, headers={"Retry-After": "9"})


def test_headers_429_and_retry_after() -> None:
    clock = ManualClock(1_699_999_980.0)
    with project(default_limits="2/minute", strategy="fixed_window", clock=clock):
        client = Client()
        responses = [client.get("/", **from_peer("192.0.2.1")) for _ in range(3)]
        other = client.get("/", **from_peer("192.0.2.2"))
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0]["RateLimit-Policy"] == '"default";q=2;w=60'
    assert responses[0]["RateLimit"] == '"default";r=1;t=60'
    assert responses[1]["RateLimit"] == '"default";r=0;t=60'
    rejected = responses[2]
    assert rejected["Content-Type"] == "application/problem+json"
    assert rejected["Retry-After"] == "60"
    assert rejected["RateLimit"] == '"default";r=0;t=60'
    assert json.loads(rejected.content) == {
        "type": QUOTA_EXCEEDED,
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded (2 per 60s (fixed_window)); retry in 60 seconds.",
        "violated-policies": ["default"],
    }
    assert other.status_code == 200


def test_rules_have_their_own_budgets_and_exemptions() -> None:
    rules = [
        {"path": "/items/{id:int}", "limits": "1/minute", "methods": "GET"},
        {"path": "/stream", "exempt": True},
    ]
    with project(default_limits="5/minute", rules=rules):
        client = Client()
        items = [client.get(f"/items/{n}").status_code for n in range(2)]
        index = client.get("/")
        exempt = [client.get("/stream") for _ in range(7)]
    assert items == [200, 429]  # one budget for every /items/<id>
    assert index.status_code == 200  # the default budget is not the rule's
    assert index["RateLimit"].startswith('"default";r=4;')
    assert {r.status_code for r in exempt} == {200}
    assert "RateLimit" not in exempt[0]


def test_streaming_responses_carry_the_headers() -> None:
    with project(default_limits="1/minute"):
        client = Client()
        streamed = client.get("/stream")
        rejected = client.get("/stream")
    assert streamed.streaming
    assert b"".join(streamed.streaming_content) == b"abc"
    assert streamed["RateLimit-Policy"] == '"default";q=1;w=60'
    assert streamed["RateLimit"].startswith('"default";r=0;t=')
    assert rejected.status_code == 429


def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    with project(default_limits="1/minute", trusted_proxies=["10.0.0.0/8"]):
        client = Client()
        spoofed = [
            client.get("/", **from_peer("192.0.2.9", **{"X-Forwarded-For": f"3.3.3.{n}"}))
            for n in range(2)
        ]
        proxied = [
            client.get("/", **from_peer("10.0.0.1", **{"X-Forwarded-For": f"6.6.6.6, {hop}"}))
            for hop in ("1.1.1.1", "2.2.2.2", "1.1.1.1")
        ]
    # an untrusted peer is the client, whatever it claims
    assert [r.status_code for r in spoofed] == [200, 429]
    # behind a trusted proxy the right-most untrusted hop is the client
    assert [r.status_code for r in proxied] == [200, 200, 429]


def test_rfc7239_forwarded_and_ipv6_prefixes() -> None:
    with project(default_limits="1/minute", trusted_proxies=["::1/128"], proxy_header="forwarded"):
        client = Client()
        first = client.get("/", **from_peer("::1", Forwarded='for="[2001:db8:1:2::1]"'))
        # another address of the same /64 shares its budget
        second = client.get("/", **from_peer("::1", Forwarded='for="[2001:db8:1:2::9]"'))
        # X-Forwarded-For is not the configured header: ignored, the proxy is the client
        other = client.get("/", **from_peer("::1", **{"X-Forwarded-For": "2001:db8:9::1"}))
    assert [first.status_code, second.status_code, other.status_code] == [200, 429, 200]


def test_shadow_mode_counts_and_logs_but_never_rejects(caplog: pytest.LogCaptureFixture) -> None:
    with project(default_limits="1/minute", shadow=True, headers="legacy"):
        client = Client()
        with caplog.at_level(logging.INFO, logger="sergas_guard.web"):
            responses = [client.get("/") for _ in range(3)]
    assert {r.status_code for r in responses} == {200}
    assert responses[2]["X-RateLimit-Limit"] == "1"
    assert responses[2]["X-RateLimit-Remaining"] == "0"
    assert "RateLimit" not in responses[2]
    would_have = [r for r in caplog.records if "shadow mode: would have rejected" in r.message]
    assert len(would_have) == 2


def test_functions_given_as_dotted_paths() -> None:
    here = __name__
    rules = [{"path": "/items/{id}", "limits": "1/minute", "key": f"{here}.by_tenant"}]
    with project(default_limits="1/minute", rules=rules, on_reject=f"{here}.busy"):
        client = Client()
        tenants = [
            client.get("/items/1", headers={"X-Tenant": name}).status_code
            for name in ("a", "b", "a")
        ]
        client.get("/")
        replaced = client.get("/")
    assert tenants == [200, 200, 429]  # one budget per tenant, not per address
    assert replaced.content == b"busy"
    assert replaced["Retry-After"] == "9"
    assert replaced["RateLimit"].startswith('"default";r=0;')  # headers added to it


def test_default_key_by_dotted_path_and_by_authenticated_user() -> None:
    with project(default_limits="1/minute", key_func=f"{__name__}.by_tenant"):
        client = Client()
        tenants = [client.get("/", headers={"X-Tenant": t}).status_code for t in "aba"]
    assert tenants == [200, 200, 429]
    # after the (stand-in) authentication middleware, request.user is the identity
    middleware = [HEADER_LOGIN, RATE_LIMIT]
    with project(middleware, default_limits="1/minute", key_func=authenticated_user()):
        client = Client()
        users = [client.get("/", headers={"X-User": u}).status_code for u in ("ann", "bob", "ann")]
        anonymous = [
            client.get("/", REMOTE_ADDR=ip).status_code for ip in ("192.0.2.1", "192.0.2.2")
        ]
    assert users == [200, 200, 429]
    assert anonymous == [200, 200]  # no user: each address is its own client


def test_rate_limited_view_answers_429_through_the_error_middleware() -> None:
    with project(default_limits="100/minute"):
        client = Client()
        admitted = client.get("/decorated")
        rejected = client.get("/decorated")
    assert admitted.status_code == 200
    assert rejected.status_code == 429
    assert rejected["Content-Type"] == "application/problem+json"
    assert int(rejected["Retry-After"]) >= 59
    body = json.loads(rejected.content)
    assert body["violated-policies"] == [DECORATED_POLICY]
    # the middleware's policy and the view's are both listed, once each
    assert rejected["RateLimit-Policy"] == f'"default";q=100;w=60, "{DECORATED_POLICY}";q=1;w=60'
    assert rejected["RateLimit"].startswith(f'"{DECORATED_POLICY}";r=0;')


def test_error_middleware_alone_gives_views_a_request_context() -> None:
    with project(middleware=[GUARD_ERRORS]):
        client = Client()
        admitted = client.get("/decorated", REMOTE_ADDR="192.0.2.1")
        other_client = client.get("/decorated", REMOTE_ADDR="192.0.2.2")
        rejected = client.get("/decorated", REMOTE_ADDR="192.0.2.1")
        plain = client.get("/")
    assert [admitted.status_code, other_client.status_code] == [200, 200]
    assert admitted["RateLimit"].startswith(f'"{DECORATED_POLICY}";r=0;t=')
    assert rejected.status_code == 429
    assert rejected["RateLimit-Policy"] == f'"{DECORATED_POLICY}";q=1;w=60'
    assert "RateLimit" not in plain  # no limit applied: no headers


def test_open_circuit_is_a_503_and_other_errors_stay_500() -> None:
    with project():
        client = Client(raise_request_exception=False)
        unavailable = client.get("/down")
        broken = client.get("/broken")
    assert unavailable.status_code == 503
    assert unavailable["Content-Type"] == "application/problem+json"
    assert unavailable["Retry-After"] == "3"
    body = json.loads(unavailable.content)
    assert (body["status"], body["circuit"], body["state"]) == (503, "search", "open")
    assert unavailable["RateLimit"].startswith('"default";r=99;')
    assert broken.status_code == 500


def raising(error: Exception) -> Any:
    def view(request: HttpRequest) -> HttpResponse:
        raise error

    return view


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("search", retry_after=2.5, state="half_open"),
        RateLimitExceeded(key="k", limit="5 per 60s", retry_after=12.2),
    ],
    ids=["circuit-open", "rate-limit-exceeded"],
)
async def test_same_answers_as_the_fastapi_exception_handlers(error: Exception) -> None:
    api = FastAPI()
    install_exception_handlers(api)

    @api.get("/fail")
    def fail() -> None:
        raise error

    async with asgi_client(api) as http:
        expected = await http.get("/fail")
    urls = type(django_project)("tests.web.django_fail")
    urls.urlpatterns = [path("fail", raising(error))]  # type: ignore[attr-defined]
    with override_settings(SERGAS_GUARD_RATELIMIT={}, MIDDLEWARE=[GUARD_ERRORS], ROOT_URLCONF=urls):
        answered = await AsyncClient().get("/fail")
    assert answered.status_code == expected.status_code
    assert answered.content == expected.content
    for name in ("content-type", "retry-after", "content-length"):
        assert answered[name] == expected.headers[name]


class FaceSpy(MemoryStorage):
    """A real MemoryStorage that notes which face decided (a subclass is not decided
    inline, so the async path must await it)."""

    def __init__(self) -> None:
        super().__init__()
        self.faces: list[str] = []

    async def decide(self, *args: Any, **kwargs: Any) -> Any:
        self.faces.append("async")
        return MemoryStorage.decide_sync(self, *args, **kwargs)  # not the spy's own

    def decide_sync(self, *args: Any, **kwargs: Any) -> Any:
        self.faces.append("sync")
        return super().decide_sync(*args, **kwargs)


async def test_async_chain_decides_on_the_async_face() -> None:
    storage = FaceSpy()
    with project(default_limits="2/minute", storage=storage, trusted_proxies=["127.0.0.1"]):
        client = AsyncClient()
        responses = [await client.get("/async") for _ in range(3)]
        # AsyncClient's peer is always 127.0.0.1: another client comes through a proxy
        streamed = await client.get("/async/stream", headers={"X-Forwarded-For": "192.0.2.5"})
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1]["RateLimit"].startswith('"default";r=0;t=')
    assert json.loads(responses[2].content)["violated-policies"] == ["default"]
    assert streamed["RateLimit"].startswith('"default";r=1;t=')  # another client's budget
    assert b"".join([chunk async for chunk in streamed.streaming_content]) == b"xy"
    assert storage.faces == ["async"] * 4


def test_sync_chain_decides_on_the_sync_face() -> None:
    storage = FaceSpy()
    with project(default_limits="2/minute", storage=storage):
        responses = [Client().get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert storage.faces == ["sync"] * 3


async def test_sync_only_middleware_inside_makes_ours_sync_under_asgi() -> None:
    storage = FaceSpy()
    with project([RATE_LIMIT, HEADER_LOGIN], default_limits="1/minute", storage=storage):
        client = AsyncClient()
        responses = [await client.get("/async") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 429]
    assert storage.faces == ["sync"] * 2  # Django ran ours in a thread: the sync face


@pytest.mark.parametrize(
    ("view", "policy"),
    [("/async/decorated", DECORATED_POLICY.replace("decorated", "async_decorated")),
     ("/decorated", DECORATED_POLICY)],
    ids=["async-view", "sync-view"],
)  # fmt: skip
async def test_rate_limited_views_in_an_async_chain(view: str, policy: str) -> None:
    # A sync view runs in a thread Django picks; the request context goes with it.
    with project(default_limits="100/minute"):
        client = AsyncClient()
        admitted = await client.get(view)
        rejected = await client.get(view)
    assert admitted.status_code == 200
    assert admitted["RateLimit-Policy"] == f'"default";q=100;w=60, "{policy}";q=1;w=60'
    assert rejected.status_code == 429
    assert json.loads(rejected.content)["violated-policies"] == [policy]
    assert rejected["RateLimit-Policy"] == admitted["RateLimit-Policy"]


@pytest.mark.parametrize(
    ("guard", "entry"),
    [
        ({"default_limit": "1/minute"}, "SERGAS_GUARD_RATELIMIT['default_limit']"),
        ({"default_limits": "lots"}, "SERGAS_GUARD_RATELIMIT['default_limits']"),
        ({"default_limits": 100}, "SERGAS_GUARD_RATELIMIT['default_limits']"),
        ({"headers": "fancy"}, "SERGAS_GUARD_RATELIMIT['headers']"),
        ({"rules": [{"path": "/a"}, {"path": "items"}]}, "SERGAS_GUARD_RATELIMIT['rules'][1]"),
        ({"rules": [{"path": "/a", "limits": "ten"}]}, "SERGAS_GUARD_RATELIMIT['rules'][0]"),
        ({"rules": [{"path": "/a", "limit": "1/s"}]}, "SERGAS_GUARD_RATELIMIT['rules'][0]"),
        ({"rules": "/a"}, "SERGAS_GUARD_RATELIMIT['rules']"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "SERGAS_GUARD_RATELIMIT['trusted_proxies']"),
        ({"key_func": "tests.web.nowhere.key"}, "SERGAS_GUARD_RATELIMIT['key_func']"),
        ({"storage": "mongodb://db"}, "SERGAS_GUARD_RATELIMIT['storage']"),
        ({"on_storage_error": "panic"}, "SERGAS_GUARD_RATELIMIT['on_storage_error']"),
        ({"problem": {"detail": "{nope}"}}, "SERGAS_GUARD_RATELIMIT['problem']"),
        ({"problem": {"words": "x"}}, "SERGAS_GUARD_RATELIMIT['problem']"),
    ],
)
def test_bad_settings_name_their_entry_at_startup(guard: dict[str, Any], entry: str) -> None:
    with project(**guard), pytest.raises(ConfigurationError) as caught:
        Client().get("/")
    error = caught.value
    assert isinstance(error, ImproperlyConfigured)  # what Django users expect
    assert error.field == entry
    assert str(error).startswith(entry + ": ")


def test_setting_that_is_not_a_dict() -> None:
    with (
        override_settings(SERGAS_GUARD_RATELIMIT="100/minute"),
        pytest.raises(ImproperlyConfigured, match="must be a dict") as caught,
    ):
        Client().get("/")
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.field == "SERGAS_GUARD_RATELIMIT"


def test_error_middleware_checks_its_settings_too() -> None:
    with (
        project(middleware=[GUARD_ERRORS], ipv6_prefix=200),
        pytest.raises(ConfigurationError, match=r"SERGAS_GUARD_RATELIMIT\['ipv6_prefix'\]"),
    ):
        Client().get("/")


@contextlib.contextmanager
def served_django() -> Iterator[str]:
    """The project's WSGI application behind werkzeug's threaded server on loopback,
    built from the settings in force; yields its base URL."""
    application = get_wsgi_application()  # builds the middlewares from current settings
    with wsgi_serving(application) as url:
        yield url


@pytest.mark.redis
def test_real_wsgi_server_on_redis_admits_exactly_the_limit(redis_url: str) -> None:
    # Patient timeouts: the 50 ms default is for production, not a loaded test machine.
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    with project(default_limits="15/minute", storage=storage), served_django() as url:

        def get(_: int) -> httpx.Response:
            with httpx.Client() as client:
                return client.get(url + "/stream")

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(get, range(40)))
    storage.close_sync()
    assert Counter(r.status_code for r in responses) == Counter({200: 15, 429: 25})
    admitted = [r for r in responses if r.status_code == 200]
    assert {r.content for r in admitted} == {b"abc"}
    assert sorted(r.headers["ratelimit"] for r in admitted)[0].startswith('"default";r=0;')
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.headers["content-type"] == "application/problem+json"
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["violated-policies"] == ["default"]


@pytest.mark.redis
@pytest.mark.parametrize(
    ("policy", "status"), [("fallback", 200), ("fail_open", 200), ("fail_closed", 503)]
)
def test_redis_outage_is_never_a_500(own_redis: RedisServer, policy: str, status: int) -> None:
    storage = RedisStorage(own_redis.url, socket_timeout=1.0, connect_timeout=1.0)
    with project(default_limits="5/minute", storage=storage, on_storage_error=policy):
        client = Client()
        before = client.get("/")
        keys = redis.Redis.from_url(own_redis.url).keys("*")
        # Counted in Redis (beside the peer set of fallback_share="auto").
        assert len([k for k in keys if k != b"sg:peers"]) == 1
        own_redis.stop()
        during = [client.get("/") for _ in range(3)]
    storage.close_sync()
    assert before.status_code == 200
    assert [r.status_code for r in during] == [status] * 3
    if policy == "fallback":  # decided by the local limiter: headers as usual
        assert during[0]["RateLimit"].startswith('"default";r=')
    elif policy == "fail_open":  # nothing was counted: no headers
        assert "RateLimit" not in during[0]
    else:
        assert during[0]["Content-Type"] == "application/problem+json"
        assert during[0]["Retry-After"] == "1"


def closing_storage_on_shutdown(app: Any, storage: RedisStorage) -> Any:
    """Django's ASGI handler refuses lifespan messages: this test's wrapper answers them
    and closes the storage's async connections in the server's own loop at shutdown."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await storage.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return asgi


@pytest.mark.redis
async def test_real_asgi_server_on_redis_admits_exactly_the_limit(
    uvicorn_app: Serve, redis_url: str
) -> None:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    # A sliding log admits at most the limit in any window: exact even across a boundary.
    with project(default_limits="20/minute", strategy="sliding_log", storage=storage):
        app = closing_storage_on_shutdown(get_asgi_application(), storage)
    with uvicorn_app(app) as base:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(client.get(base + "/async") for _ in range(50)))
    assert Counter(r.status_code for r in responses) == Counter({200: 20, 429: 30})
    assert {r.content for r in responses if r.status_code == 200} == {b"async"}
    assert all("ratelimit" in r.headers for r in responses)


@pytest.mark.redis
async def test_async_chain_on_real_redis(redis_url: str) -> None:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        with project(default_limits="2/minute", storage=storage):
            client = AsyncClient()
            responses = [await client.get("/async") for _ in range(3)]
    finally:
        await storage.aclose()
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2]["Retry-After"] != "0"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_the_documented_examples_work() -> None:
    blocks = python_blocks((Path(__file__).parents[2] / "docs" / "django.md").read_text())
    settings_blocks = [b for b in blocks if "SERGAS_GUARD_RATELIMIT = " in b]
    assert len(settings_blocks) == 3
    for block in settings_blocks:
        namespace: dict[str, Any] = {}
        exec(block, namespace)
        GuardSettings.from_mapping(namespace["SERGAS_GUARD_RATELIMIT"]).engine().close()
        ours = [m for m in namespace.get("MIDDLEWARE", []) if m.startswith("sergas_guard")]
        for dotted in ours:  # (Django's own need their apps installed to import)
            assert callable(import_string(dotted))
    testing = next(b for b in blocks if "def test_login_is_limited" in b)
    namespace = {"__name__": "docs_django"}  # Django's URL resolver wants a __module__
    exec(testing, namespace)
    with override_settings(ROOT_URLCONF=django_project.urlconf()):
        namespace["test_login_is_limited"]()  # limited before routing: 404, 404, 429
    exec(next(b for b in blocks if "def report" in b), namespace)
    urls = type(django_project)("tests.web.django_report")
    urls.urlpatterns = [path("report", namespace["report"])]  # type: ignore[attr-defined]
    with override_settings(SERGAS_GUARD_RATELIMIT={}, ROOT_URLCONF=urls):
        client = Client()
        codes = [client.get("/report").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
