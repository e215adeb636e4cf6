"""An app for the multi-process test: ``uvicorn --factory tests.web.served_app:create_app``.

Reads its Redis URL and limit from ``SG_WEB_STORAGE`` and ``SG_WEB_LIMIT``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.ratelimit.stores.redis import RedisStorage


async def pid(request: Request) -> Response:
    return PlainTextResponse(str(os.getpid()))


def create_app() -> RateLimitMiddleware:
    app = Starlette(routes=[Route("/", pid)])
    # Generous timeouts: on a loaded test machine a 50 ms timeout would fail open and
    # admit an uncounted request, which is the policy working, not what is tested here.
    storage = RedisStorage(os.environ["SG_WEB_STORAGE"], socket_timeout=5.0, connect_timeout=5.0)
    return RateLimitMiddleware(
        app,
        os.environ.get("SG_WEB_LIMIT", "25/minute"),
        storage=storage,
        strategy="sliding_log",
    )
