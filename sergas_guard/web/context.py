"""The request being served, for code that has no ``request`` parameter.

An edge (the ASGI/WSGI middleware, or the context middleware that
``sergas_guard.fastapi.install_exception_handlers`` adds) enters a
:class:`RequestContext` for each request. Key functions read the request from it, so
``@rate_limited(key=client_ip)`` works on an endpoint that declares no ``request``;
decisions taken inside the request (a FastAPI dependency, a decorated endpoint)
are recorded on it so the response carries their headers.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import cast

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.ratelimit.decorator import decision_listener
from sergas_guard.ratelimit.limiter import RateLimitDecision, RateLimiter
from sergas_guard.web.headers import (
    HeaderList,
    HeaderMode,
    PolicySet,
    RecordedDecision,
    rate_limit_headers,
)
from sergas_guard.web.request import RequestInfo

__all__ = [
    "FINISHED_REQUEST",
    "RequestContext",
    "current_context",
    "enter_context",
    "leave_context",
    "new_recorded",
    "policies_for",
    "request_context",
]

#: The request being served (None outside one); the ASGI middleware sets it directly.
#: It is the decorator's ``decision_listener`` itself: a RequestContext is what listens
#: to ``@rate_limited`` decisions, and one variable costs one set per request, not two.
#: Only the web edges set it, always to a RequestContext.
request_context = cast("ContextVar[RequestContext | None]", decision_listener)
# tuple.__new__ straight from C: the NamedTuple's own __new__ is Python code, and one
# of these is made for every request.
new_recorded = cast(
    "Callable[[tuple[PolicySet, RateLimitDecision]], RecordedDecision]",
    functools.partial(tuple.__new__, RecordedDecision),
)
_policy_cache: weakref.WeakKeyDictionary[RateLimiter, PolicySet] = weakref.WeakKeyDictionary()


def policies_for(limiter: RateLimiter, scope: str | None = None) -> PolicySet:
    """The header policies of a limiter, named ``scope`` (default: the limiter's name)."""
    if scope is not None:
        return PolicySet.build(scope, limiter.specs)
    policies = _policy_cache.get(limiter)
    if policies is None:
        policies = _policy_cache[limiter] = PolicySet.build(limiter.name, limiter.specs)
    return policies


class RequestContext:
    """One request in flight: its RequestInfo and the rate-limit decisions taken for it.

    ``headers_sent`` is set once a response carrying the headers was produced (a 429
    built with them), so the response wrapper does not add them twice.
    """

    __slots__ = ("clock", "headers_sent", "info", "mode", "recorded")

    def __init__(
        self, info: RequestInfo, mode: HeaderMode = HeaderMode.IETF, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.info = info
        self.mode = mode
        self.clock = clock
        self.recorded: list[RecordedDecision] = []
        self.headers_sent = False

    def record(self, policies: PolicySet, decision: RateLimitDecision) -> None:
        """Remember a decision so the response carries its headers."""
        self.recorded.append(new_recorded((policies, decision)))

    def record_limiter(self, limiter: RateLimiter, decision: RateLimitDecision) -> None:
        """Listener for :func:`sergas_guard.ratelimit.rate_limited` decisions."""
        self.record(policies_for(limiter), decision)

    def client_key(self) -> str:
        """``ip:<client address>``: who a ``@rate_limited`` call counts against when its
        key function fails (what :data:`~sergas_guard.web.keys.client_ip` gives)."""
        return "ip:" + self.info.client_ip

    def headers(self) -> HeaderList:
        """The rate-limit headers of every decision recorded so far."""
        return rate_limit_headers(self.recorded, self.mode, self.clock)

    def finish(self) -> None:
        """Forget the request: its scope, request view and decisions.

        Called by the edge once the app has returned (background tasks included).
        Anything that captured the context during the request (a callback armed with
        ``loop.call_later``, a connection opened then, which keeps its reader's
        context for its whole life) then holds this empty shell, not the request.
        """
        self.info = FINISHED_REQUEST
        self.recorded = []
        self.headers_sent = True

    def take_headers(self) -> HeaderList:
        """:meth:`headers`, once: later calls return nothing."""
        if self.headers_sent:
            return []
        self.headers_sent = True
        return rate_limit_headers(self.recorded, self.mode, self.clock)


#: What a finished RequestContext points to instead of its request.
FINISHED_REQUEST = RequestInfo(None, "", "", None, None)

ContextTokens = Token[RequestContext | None]


def enter_context(context: RequestContext) -> ContextTokens:
    """Make ``context`` the current request's; pass the result to :func:`leave_context`."""
    return request_context.set(context)


def leave_context(tokens: ContextTokens) -> None:
    request_context.reset(tokens)


def current_context() -> RequestContext | None:
    """The context of the request being served here, or None outside one."""
    return request_context.get()
