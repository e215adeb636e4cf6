"""Django middleware: rate limits, and problem+json answers to sergas_guard's errors.

Both classes run on Django's sync and async request paths (``sync_capable`` and
``async_capable``): Django calls each in the mode of what it wraps (sync under WSGI;
async under ASGI unless a sync-only middleware is listed after it), and the rate
limiter decides on the storage's sync face when called synchronously and on its
async face when awaited. Neither starts an event loop.

Each request gets a :class:`~sergas_guard.web.context.RequestContext`, the one the
ASGI and WSGI edges use: key functions of ``@rate_limited`` views read the request
from it, and the headers of every decision taken for the request (the middleware's
and the views') go onto the response.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpResponse, HttpResponseBase

from sergas_guard.circuit_breaker.http import circuit_open_parts
from sergas_guard.clock import SYSTEM_CLOCK
from sergas_guard.degradation.http import feature_disabled_parts
from sergas_guard.django.settings import GuardSettings, read_settings
from sergas_guard.errors import (
    CircuitOpenError,
    FeatureDisabledError,
    RateLimitExceeded,
    RequestTooCostly,
)
from sergas_guard.web.context import (
    ContextTokens,
    RequestContext,
    current_context,
    enter_context,
    leave_context,
)
from sergas_guard.web.engine import Action
from sergas_guard.web.guarded import RejectHook
from sergas_guard.web.headers import HeaderList
from sergas_guard.web.identity import ClientAddressResolver
from sergas_guard.web.rejection import (
    ProblemText,
    Rejection,
    rejection_in_context,
    too_costly_rejection,
    unavailable_rejection,
)
from sergas_guard.web.request import RequestInfo, WsgiRequestInfo
from sergas_guard.web.rules import Plan

__all__ = [
    "DjangoRequestInfo",
    "GuardErrorMiddleware",
    "RateLimitMiddleware",
    "error_rejection",
    "rejection_response",
]

# Django ships no type hints: its requests and responses are Any here.
Request = Any
Response = Any


class DjangoRequestInfo(WsgiRequestInfo):
    """The RequestInfo of a Django request: ``raw`` is ``request.META`` (the WSGI
    environ, or its equivalent under ASGI), ``request`` the HttpRequest itself.

    ``method`` and ``path`` are Django's own ``request.method`` (upper-cased) and
    ``request.path_info`` (decoded, below ``SCRIPT_NAME`` or the ASGI ``root_path``):
    what Django's URL resolver and views see, under WSGI and ASGI alike.
    """

    __slots__ = ("request",)

    def __init__(self, request: Request, resolver: ClientAddressResolver | None = None) -> None:
        meta = request.META
        RequestInfo.__init__(
            self,
            meta,
            request.method or "GET",
            request.path_info or "/",
            meta.get("REMOTE_ADDR") or None,
            resolver,
        )
        self.request = request

    @property
    def user(self) -> Any:
        """``request.user`` when AuthenticationMiddleware ran before, else the WSGI user."""
        user = getattr(self.request, "user", None)
        return user if user is not None else super().user


def rejection_response(rejection: Rejection) -> HttpResponse:
    """A Django response sending a rejection (the 429, or a 503 problem document)."""
    return HttpResponse(rejection.body, status=rejection.status, headers=rejection.header_dict())


def error_rejection(error: BaseException, problem: ProblemText) -> Rejection | None:
    """The response for one of sergas_guard's errors raised while serving a request.

    Maps what :func:`sergas_guard.fastapi.install_exception_handlers` maps: an error
    carrying a complete ``rejection`` is sent as is, ``RateLimitExceeded`` becomes the
    429 (listing the request's recorded decisions), ``RequestTooCostly`` a 413,
    ``CircuitOpenError`` the circuit breaker's 503, ``FeatureDisabledError`` a 503
    (feature shed) or 404 (off for this caller). None for any other error.
    """
    carried = getattr(error, "rejection", None)
    if isinstance(carried, Rejection):
        return carried
    if isinstance(error, RateLimitExceeded):
        return rejection_in_context(error, problem)
    if isinstance(error, RequestTooCostly):
        return too_costly_rejection(error.limit, error.capacity)
    if isinstance(error, CircuitOpenError):
        status, headers, body = circuit_open_parts(error)
    elif isinstance(error, FeatureDisabledError):
        status, headers, body = feature_disabled_parts(error)
    else:
        return None
    return Rejection(status, [(n.encode(), v.encode()) for n, v in headers], body)


def _is_response(value: object) -> bool:
    return isinstance(value, HttpResponseBase)


def _add_headers(response: Response, headers: HeaderList) -> Response:
    for name, value in headers:
        response[name.decode()] = value.decode()
    return response


class _ContextMiddleware:
    """Drives one request through :meth:`_respond` inside a request context.

    The context of a middleware of ours further out is reused (that one adds the
    headers); otherwise this one enters a context and adds the headers itself.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Any, settings: GuardSettings, resolver: ClientAddressResolver
    ) -> None:
        self.get_response = get_response
        self.resolver = resolver
        self.mode = settings.mode()
        self.clock = settings.options.get("clock") or SYSTEM_CLOCK
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # Django then awaits this middleware

    def __call__(self, request: Request) -> Any:
        if self.is_async:
            return self._call_async(request)
        context, tokens = self._enter(request)
        try:
            response = self._respond(request, context)
        finally:
            if tokens is not None:
                leave_context(tokens)
        return response if tokens is None else _add_headers(response, context.take_headers())

    async def _call_async(self, request: Request) -> Response:
        context, tokens = self._enter(request)
        try:
            response = await self._respond_async(request, context)
        finally:
            if tokens is not None:
                leave_context(tokens)
        return response if tokens is None else _add_headers(response, context.take_headers())

    def _enter(self, request: Request) -> tuple[RequestContext, ContextTokens | None]:
        context = current_context()
        if context is not None:
            return context, None
        context = RequestContext(DjangoRequestInfo(request, self.resolver), self.mode, self.clock)
        return context, enter_context(context)

    def _respond(self, request: Request, context: RequestContext) -> Response:
        return self.get_response(request)

    async def _respond_async(self, request: Request, context: RequestContext) -> Response:
        return await self.get_response(request)


class RateLimitMiddleware(_ContextMiddleware):
    """Rate limits for a Django project, configured by ``settings.SERGAS_GUARD_RATELIMIT``.

    The setting is a dict of :class:`sergas_guard.asgi.RateLimitMiddleware`'s options
    (``default_limits``, ``rules``, ``storage``, ``trusted_proxies``, ``shadow``,
    ``headers``, ``key_func``, ``on_storage_error``, ``problem``, ...); functions may be
    dotted paths. ``on_reject(request_info, decision)`` may return an HttpResponse to
    send instead of the 429 (if it raises or returns anything else, the 429 is sent
    and the fault logged once). Every response, streaming or not, carries the rate-limit
    headers. Raises GuardSettingsError (a ConfigurationError and an
    ImproperlyConfigured) naming the bad entry when Django builds the middleware.
    """

    def __init__(self, get_response: Any) -> None:
        settings = read_settings()
        self.engine = settings.engine()
        self.on_reject = settings.on_reject
        self._reject_hook = (
            None
            if settings.on_reject is None
            else RejectHook(
                settings.on_reject,
                _is_response,
                "an HttpResponse",
                self.engine.count_callback_error,
            )
        )
        super().__init__(get_response, settings, self.engine.resolver)

    def metrics(self) -> dict[str, object]:
        """Decision counters (admitted, rejected, shadow_rejected, ...) of this middleware."""
        return self.engine.metrics()

    def close(self) -> None:
        """Release the storages' connections (sync clients)."""
        self.engine.close()

    async def aclose(self) -> None:
        """Release the storages' connections (async clients first, then sync)."""
        await self.engine.aclose()

    def _respond(self, request: Request, context: RequestContext) -> Response:
        info = context.info
        plan = self.engine.plan(info.method, info.path)
        action = self.engine.decide_sync(plan, context)
        if action is Action.PASS:
            return self.get_response(request)
        return self._refusal(action, plan, context)

    async def _respond_async(self, request: Request, context: RequestContext) -> Response:
        engine = self.engine
        plan = engine.plan(context.info.method, context.info.path)
        if plan.inline:  # this process's memory: nothing to wait for
            action = engine.decide_sync(plan, context)
        else:
            action = await engine.decide(plan, context)
        if action is Action.PASS:
            return await self.get_response(request)
        return self._refusal(action, plan, context)

    def _refusal(self, action: Action, plan: Plan, context: RequestContext) -> Response:
        if action is Action.UNAVAILABLE:
            return rejection_response(unavailable_rejection())
        if action is Action.TOO_COSTLY:
            return rejection_response(self.engine.too_costly_rejection(plan))
        if self._reject_hook is not None:
            rejected = next(e.decision for e in context.recorded if not e.decision.allowed)
            replacement = self._reject_hook.call(context.info, rejected)
            if replacement is not None:
                return replacement  # the rate-limit headers are added on the way out
        return rejection_response(self.engine.rejection(context))


class GuardErrorMiddleware(_ContextMiddleware):
    """Answers sergas_guard's errors raised in views with problem+json responses.

    ``RateLimitExceeded`` (e.g. from a ``@rate_limited`` view) becomes the 429 with
    ``Retry-After`` and rate-limit headers, ``CircuitOpenError`` the circuit breaker's
    503 with ``Retry-After``, ``FeatureDisabledError`` a 503 while the feature is shed
    (degraded, maintenance) and a 404 otherwise: the responses of
    :func:`sergas_guard.fastapi.install_exception_handlers`. It also gives views a
    request context, so ``@rate_limited(key=client_ip)`` works without
    :class:`RateLimitMiddleware`; ``problem``, ``headers`` and the proxy options come
    from ``settings.SERGAS_GUARD_RATELIMIT``. Raises GuardSettingsError for a bad one.
    """

    def __init__(self, get_response: Any) -> None:
        settings = read_settings()
        self.problem = settings.problem()
        super().__init__(get_response, settings, settings.resolver())

    def process_exception(self, request: Request, exception: Exception) -> Response | None:
        """Django's hook for an exception raised by a view: a response, or None to pass."""
        rejection = error_rejection(exception, self.problem)
        return None if rejection is None else rejection_response(rejection)
