"""The FastAPI dependency on Redis leaves nothing of a finished request behind.

Served by a real uvicorn, deciding on a real redis-server: a burst of concurrent requests
(admitted, then rejected) through ``RateLimit``, with and without the request context
that ``install_exception_handlers`` adds. Afterwards no request's RequestContext,
RequestInfo or 429 exception may still be alive, and the burst must not have left any
of our objects (or frames of our code) in reference cycles: under load, each would wait
for the collector, be promoted to the old generation, and bring the full collections
(tens of ms, every request waiting) that make a server's p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import types
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse

from sergas_guard.fastapi import RateLimit, RateLimitHTTPException, install_exception_handlers
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.web.context import RequestContext
from sergas_guard.web.request import AsgiRequestInfo
from tests.web.conftest import Serve

PATH = "/dependency-lifetime-probe"
BURST = 32
LIMIT = 5


def _app(redis_url: str, *, handlers: bool) -> FastAPI:
    limit = RateLimit(f"{LIMIT}/minute", storage=RedisStorage(redis_url))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await limit.aclose()

    app = FastAPI(lifespan=lifespan)
    if handlers:
        install_exception_handlers(app)

    @app.get(PATH, response_class=PlainTextResponse, dependencies=[Depends(limit)])
    async def probe() -> str:
        return "hello"

    return app


def _ours(obj: object) -> bool:
    if type(obj).__module__.startswith("sergas_guard."):
        return True
    # type(), not getattr: a lazy proxy among the live objects would answer by
    # configuring itself.
    if type(obj) is not types.FrameType:
        return False
    return "/sergas_guard/" in obj.f_code.co_filename  # a frame of our code


def _of_the_probe(obj: object) -> bool:
    kind = type(obj)
    if kind is RequestContext:
        return getattr(obj.info, "path", None) == PATH  # type: ignore[attr-defined]
    if kind is AsgiRequestInfo:
        return getattr(obj, "path", None) == PATH
    return kind is RateLimitHTTPException


@pytest.fixture
def collector_paused() -> Iterator[list[object]]:
    """Disables the collector and, on request, saves what a collection finds as garbage."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    garbage: list[object] = []
    try:
        yield garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _collect_garbage(into: list[object]) -> None:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    into.extend(gc.garbage)
    gc.garbage.clear()


async def _burst(base: str) -> list[int]:
    async with httpx.AsyncClient(base_url=base) as http:
        responses = await asyncio.gather(*(http.get(PATH) for _ in range(BURST)))
    return [response.status_code for response in responses]


@pytest.mark.parametrize("handlers", [False, True], ids=["bare", "with_handlers"])
def test_a_burst_through_the_dependency_leaves_no_request_behind(
    uvicorn_app: Serve, redis_url: str, handlers: bool, collector_paused: list[object]
) -> None:
    with uvicorn_app(_app(redis_url, handlers=handlers)) as base:
        statuses = asyncio.run(_burst(base))  # connections open, the script is loaded
        statuses += asyncio.run(_burst(base))  # every request rejected, over warm connections
        # Still serving, connections idle: what remains now would remain under load.
        _collect_garbage(collector_paused)
        alive = [o for o in gc.get_objects() if _of_the_probe(o)]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 2 * BURST - LIMIT
    cyclic = sorted({type(o).__qualname__ for o in collector_paused if _ours(o)})
    assert cyclic == []
    assert alive == []
