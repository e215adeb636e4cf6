"""A finished request's objects are not kept alive by callbacks the server armed during it.

uvicorn arms a keep-alive timer (``loop.call_later``) while it sends a response's last
message, and a timer keeps a copy of the context it was armed in. A request context set
at that moment would keep the request's scope and decisions alive for as long as its
connection idles: under load, one request per connection always, long enough to be
promoted out of the young GC generation (the cause of the middleware's periodic full
collections, tens of ms each, under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware, RequestContextMiddleware
from sergas_guard.ratelimit.decorator import decision_listener
from sergas_guard.web.context import (
    FINISHED_REQUEST,
    RequestContext,
    current_context,
    request_context,
)
from sergas_guard.web.request import AsgiRequestInfo
from tests.web.conftest import Serve, asgi_client

PATH = "/context-lifetime-probe"


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def _app(**options: Any) -> RateLimitMiddleware:
    return RateLimitMiddleware(Starlette(routes=[Route(PATH, hello)]), "5/minute", **options)


def _live_contexts() -> int:
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if type(o) is RequestContext and getattr(o.info, "path", None) == PATH
    )


def _requests_on_idle_connections(base: str, connections: int, rounds: int) -> list[int]:
    """``rounds`` requests on each of ``connections`` keep-alive connections, which then
    idle (each with its keep-alive timer armed) while memory is inspected. The statuses.
    """
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(base_url=base)) for _ in range(connections)]
        statuses = [client.get(PATH).status_code for _ in range(rounds) for client in clients]
        assert _live_contexts() == 0
    return statuses


@pytest.mark.parametrize("headers", ["ietf", "none"])
def test_uvicorn_keep_alive_timers_keep_no_request_alive(uvicorn_app: Serve, headers: str) -> None:
    with uvicorn_app(_app(headers=headers)) as base:
        statuses = _requests_on_idle_connections(base, 5, 4)
    assert statuses.count(200) == 5  # "5/minute": the rejections went the same way
    assert statuses.count(429) == 15


def test_context_middleware_keep_alive_timers_keep_no_request_alive(uvicorn_app: Serve) -> None:
    app = RequestContextMiddleware(Starlette(routes=[Route(PATH, hello)]))
    with uvicorn_app(app) as base:
        assert set(_requests_on_idle_connections(base, 5, 4)) == {200}


class _Recorder:
    """An ASGI ``send`` that copies the context when the last message goes out, as
    ``loop.call_later`` does inside a server's send."""

    def __init__(self) -> None:
        self.at_last: contextvars.Context | None = None
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.at_last = contextvars.copy_context()


async def _call(app: Any, path: str) -> _Recorder:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("203.0.113.7", 50000),
        "server": ("test", 80),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }

    received = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if received.is_set():  # the client stays connected: wait until cancelled
            await asyncio.Event().wait()
        received.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    recorder = _Recorder()
    await app(scope, receive, recorder)
    return recorder


async def test_what_the_last_message_captures_holds_nothing_once_the_request_ends() -> None:
    seen_in_app: list[RequestContext | None] = []

    async def stream(request: Request) -> Response:
        seen_in_app.append(current_context())

        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks())

    app = RateLimitMiddleware(Starlette(routes=[Route("/s", stream)]), "1/minute")
    for status in (200, 429):  # admitted (streamed), then rejected
        recorder = await _call(app, "/s")
        assert recorder.messages[0]["status"] == status
        assert recorder.at_last is not None
        # What a timer armed in the last send keeps is at most the emptied shell.
        kept = recorder.at_last.get(request_context)
        assert kept is not None
        assert kept is recorder.at_last.get(decision_listener)
        assert kept.info is FINISHED_REQUEST
        assert kept.recorded == []
    assert seen_in_app[0] is not None  # the app itself still ran inside it
    # Streaming is untouched: every chunk arrived, the headers too.
    admitted = await _call(
        RateLimitMiddleware(Starlette(routes=[Route("/s", stream)]), "1/minute"), "/s"
    )
    bodies = [m.get("body") for m in admitted.messages if m["type"] == "http.response.body"]
    assert b"".join(b for b in bodies if b) == b"ab"
    assert any(name == b"ratelimit" for name, _ in admitted.messages[0]["headers"])


async def test_background_tasks_still_see_the_request_context() -> None:
    seen: list[str | None] = []

    def after() -> None:
        context = current_context()
        seen.append(context.info.path if context is not None else None)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(after))

    for headers in ("ietf", "none"):
        app = RateLimitMiddleware(Starlette(routes=[Route("/bg", endpoint)]), headers=headers)
        async with asgi_client(app) as http:
            assert (await http.get("/bg")).status_code == 200
    assert seen == ["/bg", "/bg"]
    assert current_context() is None  # and nothing leaks out of the request


async def test_a_context_captured_during_the_request_keeps_none_of_it_afterwards() -> None:
    """A callback armed, or a connection opened, inside a request keeps a copy of the
    context it was made in; once the request is over that copy holds an empty shell."""
    captured: list[contextvars.Context] = []

    async def endpoint(request: Request) -> Response:
        captured.append(contextvars.copy_context())  # what loop.call_later keeps
        return PlainTextResponse("ok")

    app = RateLimitMiddleware(Starlette(routes=[Route(PATH, endpoint)]), "5/minute")
    recorder = await _call(app, PATH)
    assert recorder.messages[0]["status"] == 200
    kept = captured[0].get(request_context)
    assert kept is not None  # the copy still names the context object ...
    assert kept.info is FINISHED_REQUEST  # ... but not the request
    assert kept.recorded == []
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is AsgiRequestInfo and o.path == PATH]
