"""WSGI RateLimitMiddleware on a real Flask app: its test client, and a real WSGI server."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Flask, Response, stream_with_context
from werkzeug.serving import make_server

from sergas_guard.clock import ManualClock
from sergas_guard.errors import CircuitOpenError, RateLimitExceeded
from sergas_guard.ratelimit import rate_limited
from sergas_guard.storage import storage_from_url
from sergas_guard.web import RequestInfo, Rule, client_ip
from sergas_guard.wsgi import RateLimitMiddleware, install_flask_error_handlers

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "index"

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield from ("a", "b", "c")

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/decorated")
    @rate_limited("1/minute", key=client_ip)
    def decorated() -> str:
        return "decorated"

    return app


def limited(**options: Any) -> Flask:
    app = flask_app()
    app.wsgi_app = RateLimitMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


def test_flask_headers_429_and_retry_after() -> None:
    clock = ManualClock(1_699_999_980.0)
    app = limited(default_limits="2/minute", strategy="fixed_window", clock=clock)
    client = app.test_client()
    responses = [client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.1"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["RateLimit-Policy"] == '"default";q=2;w=60'
    assert responses[1].headers["RateLimit"] == '"default";r=0;t=60'
    rejected = responses[2]
    assert rejected.headers["Content-Type"] == "application/problem+json"
    assert rejected.headers["Retry-After"] == "60"
    assert rejected.json == {
        "type": QUOTA_EXCEEDED,
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Rate limit exceeded (2 per 60s (fixed_window)); retry in 60 seconds.",
        "violated-policies": ["default"],
    }
    other = client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.2"})
    assert other.status_code == 200


def test_flask_rules_streaming_and_proxies() -> None:
    rules = [Rule("/items/{id}", "1/minute", methods="GET"), Rule("/stream", exempt=True)]
    app = limited(default_limits="5/minute", rules=rules, trusted_proxies=["10.0.0.0/8"])
    client = app.test_client()
    via_proxy = {"REMOTE_ADDR": "10.0.0.1"}
    first = client.get("/items/1", environ_base=via_proxy, headers={"X-Forwarded-For": "1.1.1.1"})
    other = client.get("/items/2", environ_base=via_proxy, headers={"X-Forwarded-For": "2.2.2.2"})
    again = client.get("/items/3", environ_base=via_proxy, headers={"X-Forwarded-For": "1.1.1.1"})
    assert [first.status_code, other.status_code, again.status_code] == [200, 200, 429]
    assert first.headers["RateLimit-Policy"] == '"GET /items/{id}";q=1;w=60'
    spoofed = [
        client.get("/items/1", environ_base={"REMOTE_ADDR": "192.0.2.9"},
                   headers={"X-Forwarded-For": f"3.3.3.{n}"}).status_code
        for n in range(2)
    ]  # fmt: skip
    assert spoofed == [200, 429]
    streamed = client.get("/stream")
    assert streamed.data == b"abc"
    assert "RateLimit" not in streamed.headers


def test_flask_shadow_legacy_headers_and_decorated_views() -> None:
    app = limited(default_limits="1/minute", shadow=True, headers="legacy")
    client = app.test_client()
    responses = [client.get("/") for _ in range(3)]
    assert {r.status_code for r in responses} == {200}
    assert responses[2].headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit" not in responses[2].headers
    middleware = app.wsgi_app
    assert isinstance(middleware, RateLimitMiddleware)
    assert middleware.metrics()["shadow_rejected"] == 2
    # @rate_limited(key=client_ip) in a view reads the request from the middleware.
    assert client.get("/decorated").status_code == 200
    app.testing = True  # let Flask propagate the view's RateLimitExceeded
    with pytest.raises(RateLimitExceeded):
        client.get("/decorated")


def test_flask_error_handlers_answer_rate_limited_views_and_open_circuits() -> None:
    app = limited(default_limits="100/minute")
    install_flask_error_handlers(app)

    @app.get("/down")
    def down() -> str:
        raise CircuitOpenError("search", retry_after=2.5)

    client = app.test_client()
    assert client.get("/decorated").status_code == 200
    rejected = client.get("/decorated")
    assert rejected.status_code == 429
    assert rejected.headers["Content-Type"] == "application/problem+json"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.json is not None
    assert rejected.json["violated-policies"] == [
        "tests.web.test_wsgi.flask_app.<locals>.decorated"
    ]
    # the middleware's policy and the view's are both listed, once
    assert rejected.headers.getlist("RateLimit-Policy") == [
        '"default";q=100;w=60, "tests.web.test_wsgi.flask_app.<locals>.decorated";q=1;w=60'
    ]
    unavailable = client.get("/down")
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "3"


def test_on_reject_returns_a_wsgi_app() -> None:
    def busy(request: RequestInfo, decision: Any) -> Any:
        return Response("busy", status=429, headers={"Retry-After": "9"})

    app = limited(default_limits="1/minute", on_reject=busy)
    client = app.test_client()
    client.get("/")
    rejected = client.get("/")
    assert rejected.data == b"busy"
    assert rejected.headers["Retry-After"] == "9"
    assert rejected.headers["RateLimit"].startswith('"default";r=0;')


@pytest.fixture
def served_flask(redis_url: str) -> Iterator[tuple[str, RateLimitMiddleware]]:
    """The limited Flask app behind werkzeug's threaded WSGI server on loopback."""
    storage = storage_from_url(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    app = limited(default_limits="15/minute", storage=storage)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    middleware = app.wsgi_app
    assert isinstance(middleware, RateLimitMiddleware)
    try:
        yield f"http://127.0.0.1:{server.server_port}", middleware
    finally:
        server.shutdown()
        thread.join(10)
        middleware.close()


@pytest.mark.redis
def test_real_wsgi_server_on_redis_admits_exactly_the_limit(
    served_flask: tuple[str, RateLimitMiddleware],
) -> None:
    url, middleware = served_flask

    def get(_: int) -> httpx.Response:
        with httpx.Client() as client:
            return client.get(url + "/")

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(get, range(40)))
    assert Counter(r.status_code for r in responses) == Counter({200: 15, 429: 25})
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.headers["content-type"] == "application/problem+json"
    assert int(rejected.headers["retry-after"]) >= 1
    metrics = middleware.metrics()  # counted from 8 server threads, none lost
    assert (metrics["admitted"], metrics["rejected"]) == (15, 25)
