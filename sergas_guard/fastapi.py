"""FastAPI (and Starlette) integration: a rate-limit dependency and exception handlers.

    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/search", dependencies=[Depends(RateLimit("10/minute"))])
    async def search(q: str) -> list[str]: ...

``RateLimit`` answers with the middleware's headers and 429; ``install_exception_handlers``
turns a ``RateLimitExceeded`` raised anywhere (``@rate_limited`` endpoints, your own
code) into that 429, and adds the request context that lets ``@rate_limited`` key by
client on endpoints that declare no ``request`` parameter.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Collection
from typing import Any, Unpack

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sergas_guard.asgi import RateLimitMiddleware, RequestContextMiddleware
from sergas_guard.errors import RateLimitExceeded, RequestTooCostly
from sergas_guard.ratelimit.callback_values import bounded_key
from sergas_guard.ratelimit.limiter import RateLimitDecision
from sergas_guard.web.context import current_context
from sergas_guard.web.engine import Action, EngineOptions, RateLimitEngine
from sergas_guard.web.headers import HeaderMode
from sergas_guard.web.identity import ProxyHeader
from sergas_guard.web.keys import api_key, authenticated_user, client_ip, request_key
from sergas_guard.web.rejection import (
    ProblemText,
    Rejection,
    rejection_in_context,
    too_costly_rejection,
    unavailable_rejection,
)
from sergas_guard.web.request import AsgiRequestInfo, RequestInfo
from sergas_guard.web.rules import Limits, Rule

__all__ = [
    "RateLimit",
    "RateLimitHTTPException",
    "RateLimitMiddleware",
    "RejectionHTTPException",
    "Rule",
    "api_key",
    "authenticated_user",
    "client_ip",
    "install_exception_handlers",
    "rejection_response",
    "request_key",
]

# Other capabilities' exception handlers, registered by install_exception_handlers
# when their module is present: (module, Starlette handler, exception class path).
_PLUGGED_HANDLERS: tuple[tuple[str, str, str, str], ...] = (
    ("sergas_guard.circuit_breaker.http", "circuit_open_exception_handler",
     "sergas_guard.errors", "CircuitOpenError"),
    ("sergas_guard.degradation.http", "feature_disabled_exception_handler",
     "sergas_guard.errors", "FeatureDisabledError"),
)  # fmt: skip

_BODYLESS_HEADERS = (b"content-type", b"content-length")


def rejection_response(rejection: Rejection) -> Response:
    """A Starlette Response sending a rejection (429 or 503 problem document)."""
    return Response(rejection.body, status_code=rejection.status, headers=rejection.header_dict())


class RejectionHTTPException(HTTPException):
    """An HTTPException that carries a complete problem response.

    With :func:`install_exception_handlers`, the problem document is sent as is;
    without, the framework's HTTPException handler still sends its status and headers
    (``Retry-After``, rate-limit headers) with its own JSON body.
    """

    def __init__(self, rejection: Rejection) -> None:
        headers = {
            name.decode(): value.decode()
            for name, value in rejection.headers
            if name not in _BODYLESS_HEADERS
        }
        HTTPException.__init__(self, rejection.status, headers=headers)
        self.rejection = rejection


class RateLimitHTTPException(RejectionHTTPException, RateLimitExceeded):
    """The 429 of a :class:`RateLimit` dependency: a RateLimitExceeded and an HTTPException."""

    def __init__(self, rejection: Rejection, decision: RateLimitDecision) -> None:
        RejectionHTTPException.__init__(self, rejection)
        exc = decision.exception()
        RateLimitExceeded.__init__(
            self,
            key=exc.key,
            limit=exc.limit,
            retry_after=exc.retry_after,
            remaining=exc.remaining,
            reset_after=exc.reset_after,
        )
        self.decision = decision

    def __str__(self) -> str:
        return RateLimitExceeded.__str__(self)


class RateLimit:
    """A FastAPI dependency that rate-limits the routes using it.

    ``limits`` is a rate string, a RateLimitConfig or a RateLimiter. ``key`` (a function
    of the RequestInfo; default: the client address) and ``cost`` (an int or function)
    say who pays how much. Each route using the dependency has its own budget unless
    ``shared=True``. ``exempt`` (a predicate of the RequestInfo) lets requests through.
    The other options are the middleware's (``storage``, ``shadow``, ``headers``,
    ``problem``, ``on_storage_error``, ``trusted_proxies``, ``name``, ...); inside a
    request context (the middleware or :func:`install_exception_handlers`) the
    context's proxy settings and header mode apply.
    Raises ConfigurationError for invalid options.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        key: Callable[[RequestInfo], str] | None = None,
        cost: int | Callable[[RequestInfo], int] = 1,
        shared: bool = False,
        exempt: Callable[[RequestInfo], bool] | None = None,
        **options: Unpack[EngineOptions],
    ) -> None:
        options.setdefault("name", "dependency")
        self._engine = RateLimitEngine(
            None, [Rule("/*", limits, key=key or client_ip, cost=cost, exempt=exempt or False,
                        name=options["name"])], **options
        )  # fmt: skip
        plan = self._engine.plan("GET", "/")
        if not shared:  # around the guarded key: the route prefixes a usable identity
            plan = dataclasses.replace(plan, key=_per_route(plan.key))
        self._plan = plan
        assert plan.limiter is not None
        self.limiter = plan.limiter

    def __repr__(self) -> str:
        return f"RateLimit({self.limiter!r})"

    async def aclose(self) -> None:
        """Close the storage's connections (call it when the app shuts down, e.g. at
        the end of its lifespan: a dependency sees no lifespan events of its own)."""
        await self._engine.aclose()

    async def __call__(self, request: Request, response: Response) -> None:
        engine = self._engine
        outer = current_context()
        context = outer or engine.context(AsgiRequestInfo(request.scope, engine.resolver))
        action = await engine.decide(self._plan, context)
        if action is Action.UNAVAILABLE:
            raise RejectionHTTPException(unavailable_rejection())
        if action is Action.TOO_COSTLY:
            raise RejectionHTTPException(engine.too_costly_rejection(self._plan))
        if action is Action.REJECT:
            decision = context.recorded[-1].decision
            raise RateLimitHTTPException(engine.rejection(context), decision)
        if outer is None:  # no response wrapper: hand the headers to FastAPI's response
            for name, value in context.take_headers():
                response.headers.append(name.decode(), value.decode())


def _per_route(identity: Callable[[RequestInfo], str]) -> Callable[[RequestInfo], str]:
    def per_route(request: RequestInfo) -> str:
        route = request.raw.get("route")
        # The route's pattern, chosen by the app; the path itself only off a route.
        path = getattr(route, "path", None) or bounded_key(request.path)
        return f"{request.method} {path}|{identity(request)}"

    return per_route


def install_exception_handlers(
    app: Any,
    *,
    problem: ProblemText | None = None,
    headers: HeaderMode | str = HeaderMode.IETF,
    trusted_proxies: Collection[str] = (),
    proxy_header: ProxyHeader = "x-forwarded-for",
    ipv6_prefix: int = 64,
    request_context: bool = True,
) -> None:
    """Answer sergas_guard's errors raised in requests with problem+json responses.

    Registers handlers on a FastAPI or Starlette ``app`` for ``RateLimitExceeded``
    (429 with ``Retry-After`` and rate-limit headers), ``RequestTooCostly`` (413) and
    for the errors of other installed capabilities, when their HTTP module is present:
    ``CircuitOpenError`` →
    503 with ``Retry-After``; ``FeatureDisabledError`` → 503 when the feature is shed
    (service degraded or in maintenance), else 404 (see
    :mod:`sergas_guard.degradation.http`). With ``request_context`` it also adds
    :class:`~sergas_guard.asgi.RequestContextMiddleware`, which key functions of
    ``@rate_limited`` endpoints need; the proxy options configure its client address.
    Call before the app starts serving (Starlette refuses middleware after that).
    """
    text = problem or ProblemText()

    async def on_rejection(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RejectionHTTPException):
            return rejection_response(exc.rejection)
        if isinstance(exc, RequestTooCostly):
            return rejection_response(too_costly_rejection(exc.limit, exc.capacity))
        assert isinstance(exc, RateLimitExceeded)
        return rejection_response(rejection_in_context(exc, text))

    app.add_exception_handler(RejectionHTTPException, on_rejection)
    app.add_exception_handler(RateLimitExceeded, on_rejection)
    app.add_exception_handler(RequestTooCostly, on_rejection)
    for module_name, handler_name, error_module, error_name in _PLUGGED_HANDLERS:
        handler = _optional(module_name, handler_name)
        if handler is not None:
            error = getattr(importlib.import_module(error_module), error_name)
            app.add_exception_handler(error, handler)
    if request_context:
        app.add_middleware(
            RequestContextMiddleware,
            headers=headers,
            trusted_proxies=trusted_proxies,
            proxy_header=proxy_header,
            ipv6_prefix=ipv6_prefix,
        )


def _optional(module_name: str, name: str) -> Callable[..., Any] | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # that capability is not installed / built
            return None
        raise
    found: Callable[..., Any] | None = getattr(module, name, None)
    return found
