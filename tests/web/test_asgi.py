"""RateLimitMiddleware through httpx's ASGI transport: headers, 429s, rules, identities."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.clock import ManualClock
from sergas_guard.errors import ConfigurationError
from sergas_guard.web import ProblemText, RequestInfo, Rule, api_key, authenticated_user
from tests.web.conftest import asgi_client

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield f"chunk{index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", hello),
            Route("/stream", stream),
            Route("/items/{id}", hello, methods=["GET", "POST"]),
            Route("/other", hello),
            Route("/health", hello),
        ]
    )


async def test_admits_exactly_the_limit_then_429_with_problem_and_headers() -> None:
    clock = ManualClock(1_699_999_980.0)  # a minute boundary: fixed windows start here
    app = RateLimitMiddleware(make_app(), "3/minute", strategy="fixed_window", clock=clock)
    async with asgi_client(app) as client:
        admitted = [await client.get("/") for _ in range(3)]
        clock.advance(0.5)
        rejected = await client.get("/")
    assert [r.status_code for r in admitted] == [200, 200, 200]
    assert [r.headers["ratelimit"] for r in admitted] == [
        f'"default";r={n};t={t}' for n, t in ((2, 60), (1, 60), (0, 60))
    ]
    assert all(r.headers["ratelimit-policy"] == '"default";q=3;w=60' for r in admitted)
    assert rejected.status_code == 429
    assert rejected.headers["content-type"] == "application/problem+json"
    assert rejected.headers["retry-after"] == "60"  # 59.5 s rounded up
    assert rejected.headers["ratelimit"] == '"default";r=0;t=60'
    body = rejected.json()
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert body["title"] == "Too Many Requests"
    assert body["violated-policies"] == ["default"]
    assert "60" in body["detail"]
    assert int(rejected.headers["content-length"]) == len(rejected.content)
    clock.advance(60)
    async with asgi_client(app) as client:
        assert (await client.get("/")).status_code == 200


async def test_streaming_responses_carry_the_headers_and_stream() -> None:
    app = RateLimitMiddleware(make_app(), "2/minute")
    async with asgi_client(app) as client:
        response = await client.get("/stream")
    assert response.text == "chunk0\nchunk1\nchunk2\n"
    assert response.headers["ratelimit"].startswith('"default";r=1;')


async def test_rules_by_pattern_and_method_and_groups() -> None:
    rules = [
        Rule("/items/{id}", "1/minute", methods=["POST"], name="create"),
        Rule("/items/{id}", "2/minute", methods=["GET"]),
        Rule("/other", "1/minute", group="shared"),
        Rule("/", group="shared"),
    ]
    app = RateLimitMiddleware(make_app(), "10/minute", rules)
    async with asgi_client(app) as client:
        posts = [(await client.post(f"/items/{n}")).status_code for n in range(2)]
        gets = [(await client.get(f"/items/{n}")).status_code for n in range(3)]
        shared = [(await client.get("/other")).status_code, (await client.get("/")).status_code]
        default = await client.get("/stream")
    assert posts == [200, 429]
    assert gets == [200, 200, 429]  # the POST rule's budget is its own
    assert shared == [200, 429]
    assert default.headers["ratelimit-policy"] == '"default";q=10;w=60'


async def test_exempt_rules_and_predicates_pass_without_headers() -> None:
    rules = [
        Rule("/health", exempt=True),
        Rule("/items/*", "1/minute", exempt=lambda r: r.header("x-internal") == "yes"),
    ]
    app = RateLimitMiddleware(make_app(), "1/minute", rules)
    async with asgi_client(app) as client:
        health = [await client.get("/health") for _ in range(3)]
        internal = [await client.get("/items/1", headers={"x-internal": "yes"}) for _ in range(3)]
        external = [(await client.get("/items/1")).status_code for _ in range(2)]
    assert all(r.status_code == 200 and "ratelimit" not in r.headers for r in health + internal)
    assert external == [200, 429]


async def test_cost_function() -> None:
    def cost(request: RequestInfo) -> int:
        return int(request.header("x-cost") or 1)

    app = RateLimitMiddleware(make_app(), None, [Rule("/items/*", "5/minute", cost=cost)])
    async with asgi_client(app) as client:
        first = await client.get("/items/1", headers={"x-cost": "4"})
        second = await client.get("/items/1", headers={"x-cost": "2"})
        third = await client.get("/items/1")
    assert first.headers["ratelimit"].startswith('"/items/*";r=1;')
    assert second.status_code == 429
    assert third.status_code == 200


async def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() -> None:
    app = RateLimitMiddleware(make_app(), "2/minute", trusted_proxies=["10.0.0.0/8"])
    async with asgi_client(app, client=("198.51.100.1", 1000)) as client:
        statuses = [
            (await client.get("/", headers={"x-forwarded-for": f"192.0.2.{n}"})).status_code
            for n in range(4)
        ]
    assert statuses == [200, 200, 429, 429]


async def test_trusted_proxy_forwarded_for_separates_clients() -> None:
    app = RateLimitMiddleware(make_app(), "1/minute", trusted_proxies=["10.0.0.0/8"])
    async with asgi_client(app, client=("10.1.2.3", 1000)) as proxy:
        first = await proxy.get("/", headers={"x-forwarded-for": "6.6.6.6, 192.0.2.1"})
        other = await proxy.get("/", headers={"x-forwarded-for": "192.0.2.2"})
        again = await proxy.get("/", headers={"x-forwarded-for": "7.7.7.7, 192.0.2.1"})
    assert [first.status_code, other.status_code, again.status_code] == [200, 200, 429]


async def test_ipv6_clients_share_their_prefix_budget() -> None:
    app = RateLimitMiddleware(make_app(), "2/minute")
    statuses = []
    for host in ("2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3", "2001:db8:0:2::1"):
        async with asgi_client(app, client=(host, 1)) as client:
            statuses.append((await client.get("/")).status_code)
    assert statuses == [200, 200, 429, 200]


async def test_api_key_and_user_key_functions() -> None:
    class HeaderAuth(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            name = conn.headers.get("x-user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None

    by_key = RateLimitMiddleware(make_app(), "1/minute", key_func=api_key("x-api-key"))
    async with asgi_client(by_key) as client:
        keyed = [
            (await client.get("/", headers={"x-api-key": key})).status_code
            for key in ("alpha", "beta", "alpha")
        ]
        anonymous = [(await client.get("/")).status_code for _ in range(2)]
    assert keyed == [200, 200, 429]
    assert anonymous == [200, 429]  # falls back to the client address

    by_user = AuthenticationMiddleware(
        RateLimitMiddleware(make_app(), "1/minute", key_func=authenticated_user()),
        backend=HeaderAuth(),
    )
    async with asgi_client(by_user) as client:
        users = [
            (await client.get("/", headers={"x-user": name})).status_code
            for name in ("ann", "bob", "ann")
        ]
    assert users == [200, 200, 429]


async def test_api_keys_never_reach_the_store() -> None:
    middleware = RateLimitMiddleware(make_app(), "5/minute", key_func=api_key())
    async with asgi_client(middleware) as client:
        await client.get("/", headers={"x-api-key": "s3cret-key"})
    storage = middleware.engine.rules.storage
    keys = list(storage._entries)  # type: ignore[attr-defined]
    assert keys
    assert not any("s3cret" in key for key in keys)


@pytest.mark.parametrize(("mode", "present", "absent"), [
    ("none", [], ["ratelimit", "x-ratelimit-limit"]),
    ("legacy", ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"], ["ratelimit"]),
    ("both", ["ratelimit", "ratelimit-policy", "x-ratelimit-reset"], []),
])  # fmt: skip
async def test_header_modes(mode: str, present: list[str], absent: list[str]) -> None:
    app = RateLimitMiddleware(make_app(), "1/minute", headers=mode)
    async with asgi_client(app) as client:
        responses = [await client.get("/"), await client.get("/")]
    for response in responses:
        assert all(name in response.headers for name in present)
        assert not any(name in response.headers for name in absent)
    assert responses[1].status_code == 429
    assert responses[1].headers["retry-after"]


async def test_shadow_mode_counts_and_logs_but_never_rejects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = [Rule("/items/*", "1/minute", shadow=True), Rule("/other", "1/minute")]
    app = RateLimitMiddleware(make_app(), "1/minute", rules, shadow=False)
    with caplog.at_level(logging.INFO, logger="sergas_guard.web"):
        async with asgi_client(app) as client:
            shadowed = [await client.get("/items/1") for _ in range(3)]
            enforced = [(await client.get("/other")).status_code for _ in range(2)]
    assert [r.status_code for r in shadowed] == [200, 200, 200]
    assert shadowed[2].headers["ratelimit"].startswith('"/items/*";r=0;')
    assert enforced == [200, 429]
    metrics = app.metrics()
    assert metrics["shadow_rejected"] == 2
    assert metrics["shadow_by_policy"] == {"/items/*": 2}
    assert metrics["rejected"] == 1
    assert sum("would have rejected" in r.getMessage() for r in caplog.records) == 2

    everywhere = RateLimitMiddleware(make_app(), "1/minute", shadow=True)
    async with asgi_client(everywhere) as client:
        assert {(await client.get("/")).status_code for _ in range(3)} == {200}


async def test_custom_problem_text_and_reject_callback() -> None:
    worded = RateLimitMiddleware(
        make_app(), "1/minute", problem=ProblemText(title="Slow down", detail="Wait {retry_after}s")
    )
    async with asgi_client(worded) as client:
        await client.get("/")
        body = (await client.get("/")).json()
    assert body["title"] == "Slow down"
    assert re.fullmatch(r"Wait [1-9][0-9]*s", body["detail"])

    seen: list[Any] = []

    def replace(request: RequestInfo, decision: Any) -> Response:
        seen.append((request.path, decision.allowed))
        return JSONResponse({"error": "busy"}, status_code=429, headers={"Retry-After": "7"})

    replaced = RateLimitMiddleware(make_app(), "1/minute", on_reject=replace)
    async with asgi_client(replaced) as client:
        await client.get("/")
        response = await client.get("/")
    assert response.json() == {"error": "busy"}
    assert response.headers["retry-after"] == "7"
    assert response.headers["ratelimit"].startswith('"default";r=0;')
    assert seen == [("/", False)]


async def test_lifespan_and_other_scopes_pass_through() -> None:
    events: list[str] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        events.append(scope["type"])
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "lifespan.") + ".complete"
                await send({"type": kind})
                if message["type"] == "lifespan.shutdown":
                    return

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    middleware = RateLimitMiddleware(raw_app, "1/minute")
    await middleware({"type": "lifespan"}, receive, send)
    await middleware({"type": "custom-protocol"}, receive, send)
    assert events == ["lifespan", "custom-protocol"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_websockets_are_limited_only_when_asked() -> None:
    # Drives the ASGI websocket protocol by hand: uvicorn here has no websocket library.
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    async def handshake(app: Any) -> list[Any]:
        inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
        sent: list[Any] = []

        async def receive() -> Any:
            return inbox.pop(0)

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("192.0.2.1", 1)}
        await app(scope, receive, send)
        return [(m["type"], m.get("code")) for m in sent]

    def app_with(**options: Any) -> Any:
        return RateLimitMiddleware(
            Starlette(routes=[WebSocketRoute("/ws", echo)]), "1/minute", **options
        )

    passing = app_with()
    assert [await handshake(passing) for _ in range(2)] == [
        [("websocket.accept", None), ("websocket.close", 1000)]
    ] * 2
    limited = app_with(websockets=True)
    assert await handshake(limited) == [("websocket.accept", None), ("websocket.close", 1000)]
    assert await handshake(limited) == [("websocket.close", 1008)]


@pytest.mark.parametrize(
    "options",
    [
        {"headers": "fancy"},
        {"on_storage_error": "ignore"},
        {"trusted_proxies": ["nonsense"]},
        {"default_limits": "ten per fortnight"},
        {"rules": ["/x"]},
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(make_app(), **options)


async def test_problem_body_is_valid_json_even_with_quotes_in_names() -> None:
    app = RateLimitMiddleware(make_app(), None, [Rule("/", "1/minute", name='say "hi"')])
    async with asgi_client(app) as client:
        await client.get("/")
        rejected = await client.get("/")
    assert json.loads(rejected.content)["violated-policies"] == ['say "hi"']
    assert rejected.headers["ratelimit"].startswith('"say \\"hi\\"";r=0;t=')


async def test_rules_as_mappings_and_key_functions_reading_headers_mapping() -> None:
    from sergas_guard import asgi

    def by_tenant(request: RequestInfo) -> str:
        return "tenant:" + request.headers.get("X-Tenant", "none")

    app = asgi.RateLimitMiddleware(
        make_app(), None, rules=[{"path": "/items/*", "limits": "1/minute", "key": by_tenant}]
    )
    async with asgi_client(app) as client:
        statuses = [
            (await client.get("/items/1", headers={"x-tenant": tenant})).status_code
            for tenant in ("a", "b", "a")
        ]
    assert statuses == [200, 200, 429]
    assert asgi.Rule is Rule
    with pytest.raises(ConfigurationError):
        asgi.RateLimitMiddleware(make_app(), rules=[{"path": "/x", "limit": "1/minute"}])


async def test_added_with_starlette_add_middleware() -> None:
    app = make_app()
    app.add_middleware(RateLimitMiddleware, default_limits="1/minute", headers="both")
    async with asgi_client(app) as client:
        first, second = await client.get("/"), await client.get("/")
    assert first.headers["x-ratelimit-limit"] == "1"
    assert second.status_code == 429
