"""Pure ASGI middleware: rate limits in front of any ASGI app (Starlette, FastAPI, ...).

Configured once in ``__init__``; each request costs one rule lookup, one storage call
and a wrapped ``send`` that appends headers to the response start. Bodies are never
buffered, so streaming responses stream and background tasks run as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Unpack

from sergas_guard.ratelimit.limiter import RateLimitDecision
from sergas_guard.types import ASGIApp, Message, Receive, Scope, Send
from sergas_guard.validation import callable_or_none, flag
from sergas_guard.web.context import (
    RequestContext,
    enter_context,
    leave_context,
    request_context,
)
from sergas_guard.web.engine import Action, EngineOptions, RateLimitEngine
from sergas_guard.web.guarded import RejectHook
from sergas_guard.web.headers import HeaderMode, header_mode
from sergas_guard.web.identity import ClientAddressResolver, ProxyHeader
from sergas_guard.web.rejection import ProblemText, Rejection, unavailable_rejection
from sergas_guard.web.request import AsgiRequestInfo, RequestInfo
from sergas_guard.web.rules import Limits, Rule, RuleLike

__all__ = [
    "ProblemText",
    "RateLimitMiddleware",
    "RequestContextMiddleware",
    "Rule",
    "send_rejection",
]

logger = logging.getLogger("sergas_guard.web")

# Enum members looked up on their class cost a Python-level attribute lookup each
# time; these are compared on every request.
_PASS = Action.PASS
_REJECT = Action.REJECT
_TOO_COSTLY = Action.TOO_COSTLY
_NO_HEADERS = HeaderMode.NONE

RejectCallback = Callable[
    [RequestInfo, RateLimitDecision], "ASGIApp | Awaitable[ASGIApp | None] | None"
]


def _with_headers(send: Send, context: RequestContext) -> Send:
    """``send`` that appends the context's rate-limit headers to the response start.

    A plain function returning ``send``'s own awaitable, not a coroutine: ASGI only
    asks that ``send(message)`` be awaitable, and a coroutine of ours would cost every
    message one more object and one more frame to step through.
    """

    def send_with_headers(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start" and not context.headers_sent:
            extra = context.take_headers()
            if extra:
                headers = message.get("headers")
                # A new list: the app may reuse its own header list for other responses.
                message["headers"] = [*headers, *extra] if headers else extra
        return send(message)

    return send_with_headers


async def send_rejection(send: Send, rejection: Rejection) -> None:
    """Send a complete error response built by :mod:`sergas_guard.web.rejection`."""
    await send(
        {"type": "http.response.start", "status": rejection.status, "headers": rejection.headers}
    )
    await send({"type": "http.response.body", "body": rejection.body})


class RequestContextMiddleware:
    """Makes the request available to key functions and collects the headers of
    decisions taken inside the app (FastAPI dependencies, ``@rate_limited`` endpoints).

    Added by :func:`sergas_guard.fastapi.install_exception_handlers`; not needed when
    :class:`RateLimitMiddleware` is installed, which does the same.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: HeaderMode | str = HeaderMode.IETF,
        trusted_proxies: Collection[str] = (),
        proxy_header: ProxyHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
    ) -> None:
        self.app = app
        self.mode = header_mode(headers)
        self.resolver = ClientAddressResolver(
            trusted_proxies, proxy_header=proxy_header, ipv6_prefix=ipv6_prefix
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or request_context.get() is not None:
            await self.app(scope, receive, send)
            return
        context = RequestContext(AsgiRequestInfo(scope, self.resolver), self.mode)
        tokens = enter_context(context)
        try:
            await self.app(scope, receive, _with_headers(send, context))
        finally:
            leave_context(tokens)
            context.finish()


class RateLimitMiddleware:
    """Rate limits for an ASGI app.

    ``default_limits`` (a rate string such as ``"100/minute"``, a RateLimitConfig or a
    RateLimiter; None for no limit) apply to requests no rule matches, one budget per
    client; ``rules`` (:class:`~sergas_guard.web.Rule`) give routes their own limits,
    matched against the path below ``root_path`` (the path Starlette routes on) and the
    method in any case.
    Options (see :class:`~sergas_guard.web.engine.EngineOptions`): ``storage`` is a
    storage object or URL (default: in memory). The client is ``key_func(request_info)``
    (default: its address; ``trusted_proxies`` CIDRs, ``proxy_header`` and
    ``ipv6_prefix`` say how to find it behind proxies). ``shadow=True`` counts but
    never rejects. ``headers`` is ``"ietf"``, ``"legacy"``, ``"both"`` or ``"none"``.
    ``problem`` words the 429 body. ``on_storage_error`` (``fallback`` = local
    limits, the default; ``fail_open``; ``fail_closed`` = 503) governs store outages.
    ``strategy`` and ``clock`` go to the limiters built from rate strings.

    ``on_reject(request_info, decision)`` may return an ASGI app (e.g. a Starlette
    Response) to send instead of the 429; if it raises or returns anything else, the
    429 is sent and the fault logged once. A request whose cost function asks more than
    the limit can ever admit is answered 413. ``websockets=True`` also limits WebSocket
    handshakes (a rejected one is closed with code 1008). Storages are closed when the
    app's lifespan ends. Raises ConfigurationError for invalid options.
    """

    def __init__(
        self,
        app: ASGIApp,
        default_limits: Limits | None = "100/minute",
        rules: Iterable[RuleLike] = (),
        *,
        on_reject: RejectCallback | None = None,
        websockets: bool = False,
        **options: Unpack[EngineOptions],
    ) -> None:
        self.app = app
        self.engine = RateLimitEngine(default_limits, rules, **options)
        self.on_reject = callable_or_none(on_reject, "on_reject")
        self._reject_hook = (
            None
            if self.on_reject is None
            else RejectHook(
                self.on_reject, callable, "an ASGI app (e.g. a Response)",
                self.engine.count_callback_error,
            )
        )  # fmt: skip
        self.websockets = flag(websockets, "websockets")

    def metrics(self) -> dict[str, object]:
        """Decision counters (admitted, rejected, shadow_rejected, ...) of this middleware."""
        return self.engine.metrics()

    async def aclose(self) -> None:
        """Close the storages' connections (done by the lifespan's shutdown when served)."""
        await self.engine.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and not (kind == "websocket" and self.websockets):
            if kind == "lifespan":
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        # The request path, inlined: every call and allocation here is paid per request.
        engine = self.engine
        context = request_context.get()  # a context middleware further out already collects
        if context is None:
            context = RequestContext(
                AsgiRequestInfo(scope, engine.resolver), engine.mode, engine.clock
            )
            request_context.set(context)
            owned = True
            wrapped = send if engine.mode is _NO_HEADERS else _with_headers(send, context)
        else:
            owned = False
            wrapped = send  # the outer middleware's wrapper adds the headers
        try:
            info = context.info
            plan = engine.rules.match(info.method, info.path)
            if plan.inline:
                action = engine.decide_sync(plan, context)  # in-memory: no I/O to wait for
            else:
                action = await engine.decide(plan, context)
            if action is _PASS:
                await self.app(scope, receive, wrapped)
            elif kind == "websocket":
                await receive()  # the websocket.connect message
                await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
            elif action is _REJECT:
                await self._reject(scope, receive, send, context)
            elif action is _TOO_COSTLY:
                await send_rejection(send, engine.too_costly_rejection(plan))
            else:
                await send_rejection(send, unavailable_rejection())
        finally:
            if owned:
                # It was None when we set it. Setting None back rather than resetting a
                # token spares each request in flight one more object for the collector.
                request_context.set(None)
                context.finish()

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, context: RequestContext
    ) -> None:
        if self._reject_hook is not None:
            rejected = next(e.decision for e in context.recorded if not e.decision.allowed)
            replacement = await self._reject_hook.acall(context.info, rejected)
            if replacement is not None:
                await replacement(scope, receive, _with_headers(send, context))
                return
        await send_rejection(send, self.engine.rejection(context))

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await self.engine.aclose()
                except Exception:  # closing must not turn a clean shutdown into a failure
                    logger.exception("closing the rate-limit storage failed")
            await send(message)

        return send_closing
