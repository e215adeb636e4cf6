"""WSGI middleware: the ASGI middleware's rules, identities, headers and 429, for Flask,
Django and any WSGI app, on the storages' sync face (no event loop involved).

    app.wsgi_app = RateLimitMiddleware(app.wsgi_app, "100/minute", rules=[...])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Unpack

from sergas_guard.ratelimit.limiter import RateLimitDecision
from sergas_guard.types import Environ, StartResponse, WSGIApp
from sergas_guard.validation import callable_or_none
from sergas_guard.web.context import RequestContext, enter_context, leave_context
from sergas_guard.web.engine import Action, EngineOptions, RateLimitEngine
from sergas_guard.web.guarded import RejectHook
from sergas_guard.web.rejection import (
    ProblemText,
    Rejection,
    rejection_in_context,
    too_costly_rejection,
    unavailable_rejection,
)
from sergas_guard.web.request import RequestInfo, WsgiRequestInfo
from sergas_guard.web.rules import Limits, Rule, RuleLike

__all__ = [
    "ProblemText",
    "RateLimitMiddleware",
    "Rule",
    "install_flask_error_handlers",
]

RejectCallback = Callable[[RequestInfo, RateLimitDecision], WSGIApp | None]


def _start_with_headers(start_response: StartResponse, context: RequestContext) -> StartResponse:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        extra = [(name.decode(), value.decode()) for name, value in context.take_headers()]
        return start_response(status, [*headers, *extra], exc_info)

    return start


def _send(start_response: StartResponse, rejection: Rejection) -> list[bytes]:
    headers = [(name.decode(), value.decode()) for name, value in rejection.headers]
    start_response(rejection.status_line, headers)
    return [rejection.body]


class RateLimitMiddleware:
    """Rate limits for a WSGI app; the options are those of
    :class:`sergas_guard.asgi.RateLimitMiddleware` (``on_reject`` returns a WSGI app;
    if it raises or returns anything else, the 429 is sent and the fault logged once).
    Rules match ``PATH_INFO`` as werkzeug routes on it (UTF-8, one leading slash) and
    the method in any case.

    Raises ConfigurationError for invalid options, at construction. Call
    :meth:`close` at shutdown to release storage connections.
    """

    def __init__(
        self,
        app: WSGIApp,
        default_limits: Limits | None = "100/minute",
        rules: Iterable[RuleLike] = (),
        *,
        on_reject: RejectCallback | None = None,
        **options: Unpack[EngineOptions],
    ) -> None:
        self.app = app
        self.engine = RateLimitEngine(default_limits, rules, **options)
        self.on_reject = callable_or_none(on_reject, "on_reject")
        self._reject_hook = (
            None
            if self.on_reject is None
            else RejectHook(
                self.on_reject, callable, "a WSGI app", self.engine.count_callback_error
            )
        )

    def metrics(self) -> dict[str, object]:
        """Decision counters (admitted, rejected, shadow_rejected, ...) of this middleware."""
        return self.engine.metrics()

    def close(self) -> None:
        """Release the storages' connections."""
        self.engine.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        info = WsgiRequestInfo(environ, engine.resolver)
        context = engine.context(info)
        tokens = enter_context(context)
        try:
            plan = engine.plan(info.method, info.path)
            action = engine.decide_sync(plan, context)
            if action is Action.REJECT:
                return self._reject(environ, start_response, context)
            if action is Action.UNAVAILABLE:
                return _send(start_response, unavailable_rejection())
            if action is Action.TOO_COSTLY:
                return _send(start_response, engine.too_costly_rejection(plan))
            return self.app(environ, _start_with_headers(start_response, context))
        finally:
            leave_context(tokens)

    def _reject(
        self, environ: Environ, start_response: StartResponse, context: RequestContext
    ) -> Iterable[bytes]:
        if self._reject_hook is not None:
            rejected = next(e.decision for e in context.recorded if not e.decision.allowed)
            replacement: WSGIApp | None = self._reject_hook.call(context.info, rejected)
            if replacement is not None:
                return replacement(environ, _start_with_headers(start_response, context))
        return _send(start_response, self.engine.rejection(context))


FlaskReply = tuple[bytes, int, dict[str, str]]


def install_flask_error_handlers(app: Any, *, problem: ProblemText | None = None) -> None:
    """Flask: answer errors raised in views with problem+json, as the middleware does.

    ``RateLimitExceeded`` (e.g. from a ``@rate_limited`` view) becomes the 429 with
    ``Retry-After`` and rate-limit headers; ``CircuitOpenError`` the circuit breaker's
    503; ``FeatureDisabledError`` a 503 while the feature is shed (degraded,
    maintenance) and a 404 otherwise. Inside :class:`RateLimitMiddleware` the 429 lists
    every decision of the request. ``RequestTooCostly`` (a ``@rate_limited`` view whose
    cost, taken from the request, no wait would admit) becomes a 413.
    """
    from sergas_guard.circuit_breaker.http import circuit_open_parts
    from sergas_guard.degradation.http import feature_disabled_parts
    from sergas_guard.errors import (
        CircuitOpenError,
        FeatureDisabledError,
        RateLimitExceeded,
        RequestTooCostly,
    )

    text = problem or ProblemText()

    def on_exceeded(exc: RateLimitExceeded) -> FlaskReply:
        rejection = rejection_in_context(exc, text)
        return rejection.body, rejection.status, rejection.header_dict()

    def on_too_costly(exc: RequestTooCostly) -> FlaskReply:
        rejection = too_costly_rejection(exc.limit, exc.capacity)
        return rejection.body, rejection.status, rejection.header_dict()

    def replying(
        parts: Callable[[Any], tuple[int, list[tuple[str, str]], bytes]],
    ) -> Callable[[Exception], FlaskReply]:
        def reply(exc: Exception) -> FlaskReply:
            status, headers, body = parts(exc)
            return body, status, dict(headers)

        return reply

    app.register_error_handler(RateLimitExceeded, on_exceeded)
    app.register_error_handler(RequestTooCostly, on_too_costly)
    app.register_error_handler(CircuitOpenError, replying(circuit_open_parts))
    app.register_error_handler(FeatureDisabledError, replying(feature_disabled_parts))
