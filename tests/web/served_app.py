"""An app for the multi-process test: ``uvicorn --factory tests.web.served_app:create_app``.

Reads its storage URL and limit from ``SG_WEB_STORAGE`` and ``SG_WEB_LIMIT``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware


async def pid(request: Request) -> Response:
    return PlainTextResponse(str(os.getpid()))


def create_app() -> RateLimitMiddleware:
    app = Starlette(routes=[Route("/", pid)])
    return RateLimitMiddleware(
        app,
        os.environ.get("SG_WEB_LIMIT", "25/minute"),
        storage=os.environ.get("SG_WEB_STORAGE", "memory://"),
        strategy="fixed_window",
    )
