"""Apps for benchmarks/bench_web.py, one factory per configuration.

Served by ``uvicorn --app-dir benchmarks/apps --factory web_apps:<name>``. Redis
configurations read ``BENCH_REDIS_URL``. Every limit is far above what the load
reaches, so each request pays for a full admission (the common case), never a 429.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse as FastPlainText
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.fastapi import RateLimit
from sergas_guard.ratelimit import RateLimiter
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.web.context import request_context

HIGH_LIMIT = "1000000/second"
#: The RateLimit-Policy header of the reference apps (HIGH_LIMIT's, as ours sends it).
POLICY = (b"ratelimit-policy", b'"default";q=1000000;w=1')


def _redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _our_redis() -> Any:
    # The peers run without timeouts; ours get 1 s instead of the 50 ms default so that
    # a loaded benchmark machine measures Redis decisions, never fail-open admissions.
    return RedisStorage(_redis_url(), connect_timeout=1.0, socket_timeout=1.0)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def bare_starlette() -> Starlette:
    return Starlette(routes=[Route("/", hello)])


class StaticHeaders:
    """Reference, not a contender: the least a middleware adding two headers can cost.

    Pure ASGI, no decision: it wraps ``send`` and appends two constant headers to the
    response start, which is what every rate limiter's middleware does at least. The
    wrapper is a plain function returning ``send``'s awaitable, the cheapest wrapper.
    """

    HEADERS = (POLICY, (b"ratelimit", b'"default";r=1;t=1'))

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def send_with_headers(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.HEADERS]
            return send(message)

        await self.app(scope, receive, send_with_headers)


def static_headers() -> StaticHeaders:
    return StaticHeaders(bare_starlette())


class DictCounter:
    """Reference, not a contender: the least a middleware that counts can cost.

    A fixed window per client address in a plain dict, and the two headers with the
    count's remaining units and seconds to the window's end. Nothing else: no lock (one
    thread only), no bound on the dict, no rules, no request context for code inside
    the app, no metrics. What any rate limiter in Python pays at least per request.
    """

    LIMIT = 1_000_000

    def __init__(self, app: Any) -> None:
        self.app = app
        self.windows: dict[str, tuple[int, int]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope["client"][0]
        now = time.monotonic()
        window = int(now)
        start, count = self.windows.get(client, (window, 0))
        if start != window:
            start, count = window, 0
        if count >= self.LIMIT:
            await PlainTextResponse("too many requests", 429)(scope, receive, send)
            return
        self.windows[client] = (start, count + 1)
        rate = b'"default";r=%d;t=%d' % (self.LIMIT - count - 1, math.ceil(start + 1 - now))
        extra = (POLICY, (b"ratelimit", rate))

        def send_with_headers(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            return send(message)

        await self.app(scope, receive, send_with_headers)


def dict_counter() -> DictCounter:
    return DictCounter(bare_starlette())


class StorageOnly:
    """Reference, not a contender: our memory storage's decision with nothing around it.

    The client's storage key cached per address, one ``MemoryStorage.decide_sync`` (the
    locked, bounded update of the sliding window), the request published in our context
    variable, and the two headers from the result. No rules, request view, counters,
    metrics or decision objects: the least our design can cost with this storage.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        limiter = RateLimiter(HIGH_LIMIT, MemoryStorage(), name="web:default")
        self.decide = limiter.storage.decide_sync
        self.checks = limiter.checks
        self.keys: dict[str, str] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0]
        key = self.keys.get(peer)
        if key is None:
            key = self.keys[peer] = "ip:" + peer
        result = self.decide(self.checks(key), 1)[0]
        rate = b'"default";r=%d;t=%d' % (result[2], math.ceil(result[4]))
        extra = (POLICY, (b"ratelimit", rate))

        def send_with_headers(message: Any) -> Any:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            return send(message)

        request_context.set(scope)  # a stand-in value: only the variable's cost matters here
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_context.set(None)


def storage_only() -> StorageOnly:
    return StorageOnly(bare_starlette())


def ours_memory() -> RateLimitMiddleware:
    return RateLimitMiddleware(bare_starlette(), HIGH_LIMIT)


def ours_redis() -> RateLimitMiddleware:
    return RateLimitMiddleware(bare_starlette(), HIGH_LIMIT, storage=_our_redis())


def _slowapi(storage_uri: str) -> Starlette:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = bare_starlette()
    app.state.limiter = Limiter(
        key_func=get_remote_address, default_limits=[HIGH_LIMIT], storage_uri=storage_uri
    )
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


def slowapi_memory() -> Starlette:
    return _slowapi("memory://")


def slowapi_redis() -> Starlette:
    return _slowapi(_redis_url())


def bare_fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/", response_class=FastPlainText)
    async def index() -> str:
        return "hello"

    return app


def ours_fastapi_dependency_redis() -> FastAPI:
    limit = RateLimit(HIGH_LIMIT, storage=_our_redis())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await limit.aclose()  # a dependency sees no lifespan of its own

    app = FastAPI(lifespan=lifespan)

    @app.get("/", response_class=FastPlainText, dependencies=[Depends(limit)])
    async def index() -> str:
        return "hello"

    return app


def fastapi_limiter_redis() -> FastAPI:
    import redis.asyncio as aioredis
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(_redis_url())
        bucket = await RedisBucket.init([Rate(1_000_000, Duration.SECOND)], client, "bench")
        state["dependency"] = RateLimiter(Limiter(bucket))
        yield
        await client.aclose()

    async def limited(request: Request, response: Response) -> None:
        await state["dependency"](request, response)

    app = FastAPI(lifespan=lifespan)

    @app.get("/", response_class=FastPlainText, dependencies=[Depends(limited)])
    async def index() -> str:
        return "hello"

    return app


def ours_memory_no_headers() -> RateLimitMiddleware:
    return RateLimitMiddleware(bare_starlette(), HIGH_LIMIT, headers="none")
