"""``health_router``: the health endpoint as a mountable Starlette router."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Unpack

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from sergas_guard.health.endpoint import EndpointOptions, HealthEndpoint, HealthRequest, View
from sergas_guard.health.registry import HealthCheckRegistry

__all__ = ["health_router"]


def _health_request(request: Request) -> HealthRequest:
    return HealthRequest(
        path=request.url.path,
        query=dict(request.query_params),
        headers={key.lower(): value for key, value in request.headers.items()},
        client=request.client.host if request.client else None,
        raw=request,
    )


def health_router(registry: HealthCheckRegistry, **options: Unpack[EndpointOptions]) -> Router:
    """A Starlette ``Router`` serving ``/livez``, ``/readyz``, ``/health`` and
    ``/health/<check or group>`` for ``registry``.

    Mount it (``app.mount("/ops", router)``) or add its routes at the root
    (``app.routes.extend(router.routes)``), in Starlette or FastAPI alike. Options
    (``details``, ``status_codes``, ``ready_tags``, ``live_tags``, ``groups``,
    ``service``, ``live_path``, ``ready_path``, ``health_path``) are those of
    :class:`~sergas_guard.health.endpoint.HealthEndpoint`; the authorisation callable
    of ``details`` receives a HealthRequest whose ``raw`` is the Starlette ``Request``.
    Raises HealthCheckError for a bad option.
    """
    endpoint = HealthEndpoint(registry, **options)

    def route_for(view: View | None) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            chosen = view or endpoint.view_of(request.path_params["name"])
            answer = await endpoint.respond(chosen, _health_request(request))
            response = Response(answer.body, status_code=answer.status_code)
            for key, value in answer.headers:
                response.headers[key] = value
            return response

        return handle

    live_path, ready_path, health_path = (endpoint.paths[k] for k in ("live", "ready", "all"))
    health_item = health_path.rstrip("/") + "/{name}"
    return Router(
        routes=[
            Route(live_path, route_for(View("live")), methods=["GET"], name="health_live"),
            Route(ready_path, route_for(View("ready")), methods=["GET"], name="health_ready"),
            Route(health_path, route_for(View("all")), methods=["GET"], name="health"),
            Route(health_item, route_for(None), methods=["GET"], name="health_item"),
        ]
    )
