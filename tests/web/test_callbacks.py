"""Callbacks that fail or return nonsense (issue 12, findings 5 and 6), through real
servers: uvicorn (Starlette middleware, FastAPI dependency), werkzeug (Flask) and
Django behind werkzeug, on the memory storage and on a real redis-server.

A key, cost, exempt or on_reject callback that raises or returns nonsense is the
application's bug: the request is still limited (under the client's address), never
admitted unlimited and never a 500, and the fault is logged once, not per request. A
cost no wait could admit is a 413 that leaves the storage untouched.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import Depends, FastAPI
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware as AsgiRateLimit
from sergas_guard.errors import ConfigurationError, RequestTooCostly
from sergas_guard.fastapi import RateLimit, install_exception_handlers
from sergas_guard.ratelimit import rate_limited
from sergas_guard.ratelimit.callback_values import MAX_KEY_LENGTH, bounded_key
from sergas_guard.storage import RedisStorage
from sergas_guard.web import RequestInfo, Rule
from sergas_guard.wsgi import RateLimitMiddleware as WsgiRateLimit
from sergas_guard.wsgi import install_flask_error_handlers
from tests.web.conftest import serving, wsgi_serving
from tests.web.django_project import GUARD_ERRORS, RATE_LIMIT
from tests.web.test_django import project, served_django

LIMIT = 5
EDGES = ("starlette", "fastapi", "flask", "django")
STORAGES = ("memory", pytest.param("redis", marks=pytest.mark.redis))


# -- the four edges, each behind a real server --------------------------------------


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def fastapi_app(limits: str, storage: Any, callbacks: dict[str, Any]) -> FastAPI:
    options = {k: v for k, v in callbacks.items() if k in ("key", "cost", "exempt")}
    dependency = RateLimit(limits, storage=storage, strategy="sliding_log", **options)
    app = FastAPI()
    install_exception_handlers(app)

    @app.api_route("/", methods=["GET", "POST"], dependencies=[Depends(dependency)])
    async def index() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def flask_app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "ok", methods=["GET", "POST"])
    return app


@contextlib.contextmanager
def served(
    edge: str,
    storage: Any,
    *,
    limits: str = f"{LIMIT}/minute",
    on_reject: Callable[..., Any] | None = None,
    **callbacks: Any,
) -> Iterator[str]:
    """``edge`` limiting ``/`` to ``limits`` with these key/cost/exempt callbacks,
    behind a real server; yields its base URL."""
    rule = Rule("/", limits, **callbacks)
    options: dict[str, Any] = {"storage": storage, "strategy": "sliding_log"}
    if on_reject is not None:
        options["on_reject"] = on_reject
    if edge == "starlette":
        app = Starlette(routes=[Route("/", ok, methods=["GET", "POST"])])
        with serving(AsgiRateLimit(app, None, [rule], **options)) as url:
            yield url
    elif edge == "fastapi":
        with serving(fastapi_app(limits, storage, callbacks)) as url:
            yield url
    elif edge == "flask":
        flask = flask_app()
        middleware = WsgiRateLimit(flask.wsgi_app, None, [rule], **options)
        flask.wsgi_app = middleware  # type: ignore[method-assign]
        with wsgi_serving(flask) as url:
            yield url
        middleware.close()
    else:
        django_settings = project(
            (RATE_LIMIT, GUARD_ERRORS), default_limits=None, rules=[rule], **options
        )
        with django_settings, served_django() as url:
            yield url


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> Iterator[RedisStorage | None]:
    """None (each middleware's own memory) or a RedisStorage on a real, empty server."""
    if request.param == "memory":
        yield None
        return
    url = request.getfixturevalue("redis_url")
    # Patient timeouts: the 50 ms default is for production, not a loaded test machine.
    redis_storage = RedisStorage(url, socket_timeout=5.0, connect_timeout=5.0)
    yield redis_storage
    redis_storage.close_sync()


def redis_client(storage: RedisStorage) -> redis.Redis:
    assert storage.url is not None
    return redis.Redis.from_url(storage.url)


def redis_keys(storage: RedisStorage | None) -> list[str]:
    """The rate-limit keys in the storage's Redis (empty for the memory storage).

    Not the peer set of fallback_share="auto" (``sg:peers``): its heartbeats are not
    decisions.
    """
    if storage is None:
        return []
    client = redis_client(storage)
    try:
        keys = (k.decode() if isinstance(k, bytes) else k for k in client.keys("*"))
        return sorted(k for k in keys if k != "sg:peers")
    finally:
        client.close()


def redis_state(storage: RedisStorage | None) -> dict[str, Any]:
    """Every key's serialised value: equal snapshots mean nothing was written."""
    if storage is None:
        return {}
    client = redis_client(storage)
    try:
        return {key: client.dump(key) for key in redis_keys(storage)}
    finally:
        client.close()


def returns_none(*args: Any, **kwargs: Any) -> Any:
    """A key function with a bug: it finds no identity and returns None."""
    return None


def send(url: str, count: int, **request: Any) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client:
        return [client.post(url + "/", **request) for _ in range(count)]


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def fault_lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR and words in record.getMessage()
    ]


# -- finding 5: a key function returning None ---------------------------------------


@pytest.mark.parametrize("edge", EDGES)
def test_a_key_returning_none_is_limited_under_the_client_address(
    edge: str, storage: RedisStorage | None, caplog: pytest.LogCaptureFixture
) -> None:
    with served(edge, storage, key=lambda r: r.header("x-api-key")) as url:
        responses = send(url, 12)
    assert statuses(responses) == Counter({200: LIMIT, 429: 12 - LIMIT})
    rejected = responses[-1]
    assert rejected.headers["content-type"] == "application/problem+json"
    assert int(rejected.headers["retry-after"]) >= 1
    lines = fault_lines(caplog, "returned None")
    assert len(lines) == 1, lines  # once for twelve requests, not once each
    assert "key function of rule" in lines[0]
    assert "non-empty str" in lines[0]
    if storage is not None:  # counted in Redis, under the address, not in a local fallback
        assert any("ip:127.0.0.1}" in key for key in redis_keys(storage))


@pytest.mark.parametrize(
    ("key", "fault"),
    [
        (lambda r: r.headers["x-api-key"], "raised KeyError"),
        (lambda r: (r.header("x-api-key") or "").encode(), "returned a bytes"),
        (lambda r: r.header("x-api-key") or "", "returned an empty str"),
        (lambda r: len(r.header("x-api-key") or ""), "returned an int"),
    ],
    ids=["raises", "bytes", "empty", "int"],
)
def test_every_bad_key_is_limited_under_the_client_address(
    key: Callable[[RequestInfo], Any], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    with served("starlette", None, key=key) as url:
        responses = send(url, 8)
    assert statuses(responses) == Counter({200: LIMIT, 429: 8 - LIMIT})
    assert len(fault_lines(caplog, fault)) == 1


@pytest.mark.redis
def test_a_key_echoing_a_huge_header_makes_bounded_distinct_storage_keys(redis_url: str) -> None:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    first, second = "a" * 8000 + "1", "a" * 8000 + "2"  # equal heads, different tails
    with served("starlette", storage, key=lambda r: r.header("x-token")) as url:
        one = send(url, LIMIT + 1, headers={"x-token": first})
        two = send(url, 2, headers={"x-token": second})
    assert [r.status_code for r in one] == [200] * LIMIT + [429]
    assert [r.status_code for r in two] == [200, 200]  # its own budget
    keys = redis_keys(storage)
    storage.close_sync()
    assert len(keys) == 2
    assert max(len(key) for key in keys) < MAX_KEY_LENGTH + 64


def test_bounded_keys_stay_distinct_and_short() -> None:
    assert bounded_key("user:42") == "user:42"
    long_keys = {bounded_key("x" * 1000 + str(n)) for n in range(1000)}
    assert len(long_keys) == 1000
    assert {len(key) for key in long_keys} == {MAX_KEY_LENGTH}
    bounded_key("\ud800").encode("utf-8")  # a lone surrogate: digested, encodable


# -- finding 6: a cost above capacity, a float cost -------------------------------------


def content_length(request: RequestInfo) -> int:
    return int(request.header("content-length") or 0)


@pytest.mark.parametrize("edge", EDGES)
def test_a_cost_no_wait_can_admit_is_a_413_that_leaves_the_storage_alone(
    edge: str, storage: RedisStorage | None, caplog: pytest.LogCaptureFixture
) -> None:
    with served(edge, storage, cost=content_length) as url:
        before = send(url, 2, content=b"x")  # 2 of 5 units
        state = redis_state(storage)
        refused = send(url, 3, content=b"x" * 100)  # 100 units: never
        unchanged = redis_state(storage)
        after = send(url, 5, content=b"x")
    assert [r.status_code for r in before] == [200, 200]
    assert [r.status_code for r in refused] == [413] * 3
    problem = refused[0]
    assert problem.headers["content-type"] == "application/problem+json"
    assert "retry-after" not in problem.headers  # no wait would help
    assert problem.json()["status"] == 413
    assert "can ever admit" in problem.json()["detail"]
    assert unchanged == state  # Redis untouched (memory: the counts below say so)
    assert [r.status_code for r in after] == [200, 200, 200, 429, 429]
    assert not fault_lines(caplog, "cost")  # a big request is the client's, not a bug


@pytest.mark.parametrize("edge", EDGES)
def test_a_float_cost_is_rounded_up_and_logged_once(
    edge: str, storage: RedisStorage | None, caplog: pytest.LogCaptureFixture
) -> None:
    def per_kilobyte(request: RequestInfo) -> float:
        return int(request.header("content-length") or 0) / 1000

    with served(edge, storage, cost=per_kilobyte) as url:
        responses = send(url, 4, content=b"x" * 1500)  # 1.5 -> 2 units each
        over = send(url, 1, content=b"x" * 9000)  # 9 units: never
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    assert [r.status_code for r in over] == [413]
    lines = fault_lines(caplog, "returned a float")
    assert len(lines) == 1
    assert "cost function of rule" in lines[0]


@pytest.mark.parametrize(
    ("cost", "fault"),
    [
        (lambda r: None, "returned None"),
        (lambda r: -3, "returned a negative cost"),
        (lambda r: math.nan, "returned NaN"),
        (lambda r: True, "returned a bool"),
        (lambda r: "2", "returned a str"),
        (lambda r: 1 // 0, "raised ZeroDivisionError"),
    ],
    ids=["none", "negative", "nan", "bool", "str", "raises"],
)
def test_a_nonsense_cost_costs_one(
    cost: Callable[[RequestInfo], Any], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    with served("starlette", None, cost=cost) as url:
        responses = send(url, 8)
    assert statuses(responses) == Counter({200: LIMIT, 429: 8 - LIMIT})
    assert len(fault_lines(caplog, fault)) == 1


def test_an_infinite_cost_is_a_413() -> None:
    with served("flask", None, cost=lambda r: math.inf) as url:
        assert {r.status_code for r in send(url, 3)} == {413}


def test_a_fixed_cost_above_capacity_fails_at_construction() -> None:
    app = Starlette()
    with pytest.raises(ConfigurationError) as error:
        AsgiRateLimit(app, None, [Rule("/upload", "5/minute", cost=6)])
    assert error.value.field == "cost"


def test_shadow_mode_lets_a_never_fitting_request_through_and_counts_it() -> None:
    app = Starlette(routes=[Route("/", ok, methods=["POST"])])
    middleware = AsgiRateLimit(app, None, [Rule("/", "5/minute", cost=content_length)], shadow=True)
    with serving(middleware) as url:
        responses = send(url, 2, content=b"x" * 50)
    assert [r.status_code for r in responses] == [200, 200]
    assert middleware.metrics()["shadow_rejected"] == 2


# -- exempt and on_reject -----------------------------------------------------------------


@pytest.mark.parametrize("edge", EDGES)
def test_an_exempt_predicate_that_raises_counts_the_request(
    edge: str, caplog: pytest.LogCaptureFixture
) -> None:
    with served(edge, None, exempt=lambda r: r.headers["x-internal"] == "yes") as url:
        exempt = send(url, 8, headers={"x-internal": "yes"})
        counted = send(url, 8)
    assert statuses(exempt) == Counter({200: 8})
    assert statuses(counted) == Counter({200: LIMIT, 429: 8 - LIMIT})
    assert len(fault_lines(caplog, "raised KeyError")) == 1


def test_an_exempt_predicate_returning_a_non_bool_does_not_exempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client-sent header is truthy whatever it says: it must not buy an exemption.
    with served("flask", None, exempt=lambda r: r.header("x-internal")) as url:
        responses = send(url, 8, headers={"x-internal": "no"})
    assert statuses(responses) == Counter({200: LIMIT, 429: 8 - LIMIT})
    assert len(fault_lines(caplog, "exempt predicate of rule")) == 1


def raising_on_reject(request: RequestInfo, decision: Any) -> Any:
    raise RuntimeError("a bug in on_reject")


def str_on_reject(request: RequestInfo, decision: Any) -> Any:
    return "busy"


@pytest.mark.parametrize("edge", ["starlette", "flask", "django"])
@pytest.mark.parametrize(
    ("on_reject", "fault"),
    [(raising_on_reject, "raised RuntimeError"), (str_on_reject, "returned a str")],
    ids=["raises", "str"],
)
def test_a_failing_on_reject_sends_the_standard_429(
    edge: str,
    on_reject: Callable[..., Any],
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with served(edge, None, on_reject=on_reject) as url:
        responses = send(url, 9)
    assert statuses(responses) == Counter({200: LIMIT, 429: 9 - LIMIT})
    assert responses[-1].headers["content-type"] == "application/problem+json"
    lines = fault_lines(caplog, fault)
    assert len(lines) == 1
    assert "on_reject callback" in lines[0]


def test_callback_faults_are_counted_in_metrics() -> None:
    app = Starlette(routes=[Route("/", ok, methods=["POST"])])
    middleware = AsgiRateLimit(app, None, [Rule("/", "5/minute", key=returns_none)])
    with serving(middleware) as url:
        send(url, 7)
    metrics = middleware.metrics()
    assert (metrics["admitted"], metrics["rejected"], metrics["callback_errors"]) == (5, 2, 7)
    assert metrics["storage_errors"] == 0  # a callback's bug is not a storage outage


# -- a property: whatever the callbacks do, no 500 and no admit past the limit ------------

PROPERTY_LIMIT = 3

returned = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(min_size=300, max_size=400),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=2),
)
raised = st.sampled_from([KeyError, ValueError, TypeError, ZeroDivisionError, RuntimeError])
behaviour = st.one_of(returned.map(lambda v: ("return", v)), raised.map(lambda e: ("raise", e)))


class Scripted:
    """Callbacks whose behaviour each hypothesis example sets; one server serves all."""

    def __init__(self) -> None:
        self.key: tuple[str, Any] = ("return", None)
        self.cost: tuple[str, Any] = ("return", 1)

    @staticmethod
    def _act(action: tuple[str, Any]) -> Any:
        kind, value = action
        if kind == "raise":
            raise value("scripted")
        return value

    def key_of(self, request: RequestInfo) -> Any:
        value = self._act(self.key)
        # A valid identity is made this example's own, so examples share no budget.
        return request.client_ip + value if isinstance(value, str) and value else value

    def cost_of(self, request: RequestInfo) -> Any:
        return self._act(self.cost)


def charges_nothing(cost: tuple[str, Any]) -> bool:
    kind, value = cost
    return kind == "return" and not isinstance(value, bool) and value == 0


def never_fits(cost: tuple[str, Any]) -> bool:
    kind, value = cost
    if kind != "return" or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(value) and value > PROPERTY_LIMIT


@pytest.fixture(scope="module", params=STORAGES)
def scripted_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Scripted]]:
    """One uvicorn serving the middleware whose callbacks are Scripted; the client
    address comes from X-Forwarded-For, so each example is a new client."""
    storage: RedisStorage | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_session")
        storage = RedisStorage(server.url, socket_timeout=5.0, connect_timeout=5.0)
    scripted = Scripted()
    app = Starlette(routes=[Route("/", ok, methods=["POST"])])
    rule = Rule("/", f"{PROPERTY_LIMIT}/minute", key=scripted.key_of, cost=scripted.cost_of)
    middleware = AsgiRateLimit(
        app, None, [rule], storage=storage, strategy="sliding_log", trusted_proxies=["127.0.0.1"]
    )
    with serving(middleware) as url:
        yield url, scripted
    if storage is not None:
        storage.close_sync()


examples = iter(range(1, 10**6))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=behaviour, cost=behaviour)
def test_whatever_the_callbacks_do_no_500_and_no_admit_past_the_limit(
    scripted_server: tuple[str, Scripted], key: tuple[str, Any], cost: tuple[str, Any]
) -> None:
    url, scripted = scripted_server
    scripted.key, scripted.cost = key, cost
    n = next(examples)
    client = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
    responses = send(url, PROPERTY_LIMIT + 2, headers={"x-forwarded-for": client})
    counts = statuses(responses)
    assert set(counts) <= {200, 429, 413}, counts
    if never_fits(cost):
        assert counts == Counter({413: PROPERTY_LIMIT + 2})
    elif not charges_nothing(cost):
        assert counts[200] <= PROPERTY_LIMIT
        assert counts[413] == 0


# -- @rate_limited: in a web request, and in plain service code --------------------------


def test_rate_limited_outside_a_request_raises_configuration_errors() -> None:
    @rate_limited("5/minute", key=lambda user: user)
    def by_user(user: Any) -> str:
        return "ok"

    @rate_limited("5/minute", cost=lambda n: n)
    def costly(n: Any) -> str:
        return "ok"

    @rate_limited("5/minute", key=lambda user: user["id"])
    def by_id(user: Any) -> str:
        return "ok"

    for bad in (None, b"bytes", 7, ""):
        with pytest.raises(ConfigurationError) as error:
            by_user(bad)
        assert error.value.field == "key"
    for bad_cost in (2.5, None, -1, 6, True):
        with pytest.raises(ConfigurationError) as error:
            costly(bad_cost)
        assert error.value.field == "cost"
    with pytest.raises(KeyError):  # the key function's own error, not a storage outage
        by_id({})
    assert [by_user("alice") for _ in range(5)] == ["ok"] * 5
    assert costly(5) == "ok"


def decorated_fastapi_app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.post("/")
    @rate_limited(f"{LIMIT}/minute", key=returns_none, strategy="sliding_log")
    async def index() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/upload")
    @rate_limited(
        f"{LIMIT}/minute",
        cost=lambda request: int(request.headers.get("content-length", 0)),
        strategy="sliding_log",
    )
    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def test_rate_limited_in_a_request_limits_under_the_client_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serving(decorated_fastapi_app()) as url:
        responses = send(url, 8)
        with httpx.Client(timeout=30) as client:
            uploads = [client.post(url + "/upload", content=b"x" * n) for n in (3, 100, 2, 1)]
    assert statuses(responses) == Counter({200: LIMIT, 429: 8 - LIMIT})
    assert len(fault_lines(caplog, "key function of @rate_limited")) == 1
    assert [r.status_code for r in uploads] == [200, 413, 200, 429]
    assert uploads[1].headers["content-type"] == "application/problem+json"


def test_rate_limited_flask_view_with_a_never_fitting_cost_is_a_413() -> None:
    app = Flask(__name__)
    install_flask_error_handlers(app)

    @app.post("/")
    @rate_limited("5/minute", cost=lambda: 50)
    def index() -> str:
        return "ok"

    app.wsgi_app = WsgiRateLimit(app.wsgi_app, None)  # type: ignore[method-assign]
    with wsgi_serving(app) as url:
        responses = send(url, 2)
    assert [r.status_code for r in responses] == [413, 413]


def test_django_answers_request_too_costly_with_a_413() -> None:
    from sergas_guard.django.middleware import error_rejection
    from sergas_guard.web.rejection import ProblemText

    rejection = error_rejection(RequestTooCostly(limit="5 per 60s", capacity=5), ProblemText())
    assert rejection is not None
    assert rejection.status == 413


def test_fastapi_dependency_with_a_failing_key_keeps_routes_apart() -> None:
    dependency = RateLimit("1/minute", key=returns_none)
    app = FastAPI()

    @app.get("/a", dependencies=[Depends(dependency)])
    async def a() -> str:
        return "a"

    @app.get("/b", dependencies=[Depends(dependency)])
    async def b() -> str:
        return "b"

    install_exception_handlers(app)
    with serving(app) as url, httpx.Client() as client:
        codes = [client.get(url + path).status_code for path in ("/a", "/b", "/a", "/b")]
    assert codes == [200, 200, 429, 429]
