"""Ready-made key functions: who a request counts against.

Each takes a :class:`~sergas_guard.web.request.RequestInfo` and returns an identity
string. Wrapped by :func:`request_key`, the same function also serves as the ``key``
of ``@rate_limited`` on an endpoint: called with the endpoint's arguments, it reads
the request being served from the request context instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sergas_guard.errors import ConfigurationError
from sergas_guard.web.context import current_context
from sergas_guard.web.request import AsgiRequestInfo, RequestInfo

__all__ = [
    "KeyFunction",
    "api_key",
    "authenticated_user",
    "client_ip",
    "current_request",
    "request_key",
]

RequestKey = Callable[[RequestInfo], str]


def current_request(*args: Any, **kwargs: Any) -> RequestInfo:
    """The request a call belongs to: a RequestInfo argument, else the current context's.

    A Starlette ``Request`` among the arguments also serves. Raises ConfigurationError
    outside a request context (add the middleware or call install_exception_handlers).
    """
    for value in (*args, *kwargs.values()):
        if isinstance(value, RequestInfo):
            return value
    context = current_context()
    if context is not None:
        return context.info
    for value in (*args, *kwargs.values()):
        scope = getattr(value, "scope", None)
        if isinstance(scope, dict) and scope.get("type") in ("http", "websocket"):
            return AsgiRequestInfo(scope)
    raise ConfigurationError(
        "no request is being served here: to key limits by request, add "
        "sergas_guard.asgi.RateLimitMiddleware or call "
        "sergas_guard.fastapi.install_exception_handlers(app) (ASGI), wrap the app in "
        "sergas_guard.wsgi.RateLimitMiddleware (WSGI), or list "
        "sergas_guard.django.GuardErrorMiddleware in Django's MIDDLEWARE",
        field="key",
    )


class KeyFunction:
    """A key function of a RequestInfo that also works as ``@rate_limited(key=...)``."""

    __slots__ = ("__wrapped__", "func")

    def __init__(self, func: RequestKey) -> None:
        self.func = func
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"request_key({getattr(self.func, '__qualname__', self.func)!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        if len(args) == 1 and not kwargs and isinstance(args[0], RequestInfo):
            return self.func(args[0])
        return self.func(current_request(*args, **kwargs))


def request_key(func: RequestKey) -> KeyFunction:
    """Make a ``RequestInfo -> str`` function usable as an endpoint decorator's key too."""
    return func if isinstance(func, KeyFunction) else KeyFunction(func)


def _client_ip(request: RequestInfo) -> str:
    """``ip:<address>``: the client address, proxies resolved, IPv6 grouped by prefix."""
    return "ip:" + request.client_ip


client_ip = KeyFunction(_client_ip)


def _digest(secret: str) -> str:
    # Keys end up in Redis and in logs; a digest identifies the caller without exposing
    # the credential itself.
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def api_key(header: str = "x-api-key", *, fallback: RequestKey = _client_ip) -> KeyFunction:
    """``key:<sha256 of the header>``; requests without the header fall back (default: IP).

    The key itself never reaches the store: only a digest does.
    """
    name = header.lower()

    def by_api_key(request: RequestInfo) -> str:
        value = request.header(name)
        return "key:" + _digest(value) if value else fallback(request)

    return KeyFunction(by_api_key)


def authenticated_user(*, fallback: RequestKey = _client_ip) -> KeyFunction:
    """``user:<identity>`` of ``scope["user"]`` when authenticated, else the fallback (IP).

    Starlette users expose ``identity`` (or ``display_name``); any other object's
    ``str()`` is used. WSGI reads ``environ["sergas_guard.user"]`` or ``REMOTE_USER``.
    """

    def by_user(request: RequestInfo) -> str:
        user = request.user
        if user is None or not getattr(user, "is_authenticated", True):
            return fallback(request)
        for attribute in ("identity", "display_name"):
            try:
                value = getattr(user, attribute, None)
            except NotImplementedError:  # starlette's BaseUser leaves these abstract
                continue
            if isinstance(value, str) and value:
                return "user:" + value
        return "user:" + str(user)

    return KeyFunction(by_user)
