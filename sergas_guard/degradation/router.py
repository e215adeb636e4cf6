"""A Starlette router for operators: read and set the degradation level, list and change flags.

Every route first runs the ``auth`` callable the application supplies (sync or async,
given the request): it returns who the caller is (anything truthy) or a falsy value to
refuse, or raises Starlette's ``HTTPException``. There is no anonymous mode: building
the router without ``auth`` is a ConfigurationError. Mount it where operators reach it::

    app.mount("/ops/degradation", degradation_router(manager, auth=require_admin))

Routes (JSON in and out, errors as RFC 9457 problem+json):

``GET /``              level, what set it, signal readings, fallbacks, and all flags
``GET /level``         the level alone; ``PUT /level`` ``{"level": "degraded", "reason": "..."}``
``GET /flags``         every flag; ``GET /flags/{name}`` one
``PATCH /flags/{name}`` change fields of an existing flag (404 when unknown)
``PUT /flags/{name}``  create or change a flag; ``DELETE /flags/{name}`` remove it

Bodies are JSON objects of at most 64 KiB, nested at most 8 deep (413 or 400 beyond,
see :mod:`~sergas_guard.degradation.json_body`); what the router logs and echoes of a
request (principal, flag name, changes, reason) is clipped to one bounded line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from sergas_guard.clipping import clip
from sergas_guard.degradation.json_body import BodyRefused, read_json_object
from sergas_guard.degradation.manager import DegradationManager
from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.problem import PROBLEM_CONTENT_TYPE, problem_body

__all__ = ["Authenticator", "degradation_router"]

logger = logging.getLogger("sergas_guard.degradation.router")

Authenticator = Callable[[Request], Any]
Endpoint = Callable[[Request, Any], Awaitable[Response]]

_FLAG_FIELDS = {
    "enabled",
    "description",
    "rollout_percentage",
    "essential",
    "allow_users",
    "deny_users",
}


#: The most characters of a problem's detail: ours are short, but some echo a value.
_MAX_DETAIL = 1000
_TITLES = {400: "Bad Request", 413: "Content Too Large"}


def _problem(status: int, title: str, detail: str, **headers: str) -> Response:
    body = problem_body(status=status, title=title, detail=clip(detail, _MAX_DETAIL))
    return Response(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def degradation_router(
    manager: DegradationManager,
    *,
    auth: Authenticator | None = None,
    challenge: str = "Bearer",
) -> Router:
    """Build the operators' router for ``manager``; every route requires ``auth``.

    ``challenge`` is the ``WWW-Authenticate`` value sent with a 401.
    Raises ConfigurationError when ``auth`` is missing or not callable.
    """
    if auth is None or not callable(auth):
        raise ConfigurationError(
            "the degradation router needs auth=, a callable admitting operators", field="auth"
        )
    flags = manager.feature_flags

    def guarded(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                principal = auth(request)
                if inspect.isawaitable(principal):
                    principal = await principal
            except HTTPException as exc:
                return _problem(exc.status_code, "Refused", str(exc.detail), **(exc.headers or {}))
            if not principal:
                return _problem(
                    401,
                    "Unauthorized",
                    "operator authentication required",
                    **{"WWW-Authenticate": challenge},
                )
            try:
                return await endpoint(request, principal)
            except BodyRefused as refused:
                return _problem(refused.status, _TITLES[refused.status], refused.detail)
            except ConfigurationError as exc:
                return _problem(400, "Bad Request", str(exc))
            except StorageUnavailable as exc:
                return _problem(503, "Service Unavailable", str(exc))

        return run

    def level_view() -> dict[str, Any]:
        status = manager.status()
        return {key: status[key] for key in ("level", "manual_level", "auto_level", "signals")}

    async def overview(request: Request, principal: Any) -> Response:
        await flags.refresh()
        listed = [state.as_json() for state in flags.list_flags()]
        return JSONResponse({**manager.status(), "flags": listed})

    async def get_level(request: Request, principal: Any) -> Response:
        return JSONResponse(level_view())

    async def put_level(request: Request, principal: Any) -> Response:
        body = await read_json_object(request)
        if "level" not in body:
            return _problem(400, "Bad Request", "the body needs a 'level'")
        # The manager keeps and logs the reason: one bounded line, like our own logs.
        reason = clip(body.get("reason") or f"set by {clip(principal)}")
        # Shared levels are written to Redis with the sync client: keep it off the loop.
        await asyncio.to_thread(manager.set_degradation_level, body["level"], reason)
        logger.warning(
            "operator %s set the degradation level to %s", clip(principal), clip(body["level"])
        )
        return JSONResponse(level_view())

    async def list_flags(request: Request, principal: Any) -> Response:
        await flags.refresh()
        return JSONResponse({"flags": [s.as_json() for s in flags.list_flags()]})

    def one_flag(name: str) -> Response:
        for state in flags.list_flags():
            if state.definition.name == name:
                return JSONResponse(state.as_json())
        return _problem(404, "Not Found", f"no flag named {name!r}")

    async def get_flag(request: Request, principal: Any) -> Response:
        await flags.refresh()
        return one_flag(request.path_params["name"])

    async def change_flag(request: Request, principal: Any) -> Response:
        name = request.path_params["name"]
        changes = await read_json_object(request)
        unknown = set(changes) - _FLAG_FIELDS
        if unknown:
            return _problem(400, "Bad Request", f"unknown fields: {', '.join(sorted(unknown))}")
        create = request.method == "PUT"
        try:
            if flags.shared:
                await flags.update_async(name, create=create, **changes)
            else:
                # A file write fsyncs: keep it off the event loop.
                await asyncio.to_thread(lambda: flags.update(name, create=create, **changes))
        except KeyError:
            return _problem(404, "Not Found", f"no flag named {name!r}")
        logger.warning(
            "operator %s changed flag %s: %s", clip(principal), clip(name), clip(changes)
        )
        return one_flag(name)

    async def delete_flag(request: Request, principal: Any) -> Response:
        name = request.path_params["name"]
        try:
            await asyncio.to_thread(flags.remove, name)
        except KeyError:
            return _problem(404, "Not Found", f"no flag named {name!r}")
        logger.warning("operator %s removed flag %s", clip(principal), clip(name))
        return Response(status_code=204)

    return Router(
        routes=[
            Route("/", guarded(overview), methods=["GET"]),
            Route("/level", guarded(get_level), methods=["GET"]),
            Route("/level", guarded(put_level), methods=["PUT"]),
            Route("/flags", guarded(list_flags), methods=["GET"]),
            Route("/flags/{name}", guarded(get_flag), methods=["GET"]),
            Route("/flags/{name}", guarded(change_flag), methods=["PATCH", "PUT"]),
            Route("/flags/{name}", guarded(delete_flag), methods=["DELETE"]),
        ]
    )
