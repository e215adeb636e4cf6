"""A minimal Django project for the Django tests: settings, and URLconfs built per test.

Django's settings are process-wide, so :func:`configure` sets them once per session
(only if nothing configured Django before) and the tests change them with
``override_settings``, which puts them back afterwards. Each test builds its own
URLconf with :func:`urlconf`, so the limiters of ``@rate_limited`` views start empty.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from sergas_guard.errors import CircuitOpenError
from sergas_guard.ratelimit import rate_limited
from sergas_guard.web import client_ip

RATE_LIMIT = "sergas_guard.django.RateLimitMiddleware"
GUARD_ERRORS = "sergas_guard.django.GuardErrorMiddleware"
HEADER_LOGIN = "tests.web.django_project.header_login"


def configure() -> None:
    """Configure Django for these tests, once; a no-op if it is configured already."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="sergas-guard-tests",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[RATE_LIMIT, GUARD_ERRORS],
        ROOT_URLCONF=__name__,
        USE_TZ=True,
        LOGGING_CONFIG=None,  # leave the test run's logging alone
        # django.test creates the static files storage as a lazy proxy; a test that
        # inspects every live object (gc.get_objects) would make it configure itself.
        STATIC_URL="/static/",
    )
    django.setup()


class HeaderUser:
    """What Django's User offers key functions: ``is_authenticated`` and ``str()``."""

    def __init__(self, username: str) -> None:
        self.username = username
        self.is_authenticated = bool(username)

    def __str__(self) -> str:
        return self.username


def header_login(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Stands in for AuthenticationMiddleware (which needs a database): the user is the
    ``X-User`` header, anonymous without it."""

    def middleware(request: HttpRequest) -> Any:
        request.user = HeaderUser(request.headers.get("X-User", ""))
        return get_response(request)

    return middleware


def urlconf_module(name: str, urlpatterns: list[Any]) -> types.ModuleType:
    """A URLconf made of ``urlpatterns``: a module object, which Django accepts as
    ROOT_URLCONF."""
    module = types.ModuleType(name)
    module.urlpatterns = urlpatterns  # type: ignore[attr-defined]
    return module


def urlconf() -> types.ModuleType:
    """A fresh URLconf of the views these tests use."""

    def index(request: HttpRequest) -> HttpResponse:
        return HttpResponse("index")

    def item(request: HttpRequest, item_id: int) -> JsonResponse:
        return JsonResponse({"id": item_id})

    def stream(request: HttpRequest) -> StreamingHttpResponse:
        def chunks() -> Iterator[bytes]:
            yield from (b"a", b"b", b"c")

        return StreamingHttpResponse(chunks(), content_type="text/plain")

    @rate_limited("1/minute", key=client_ip)
    def decorated(request: HttpRequest) -> HttpResponse:
        return HttpResponse("decorated")

    def down(request: HttpRequest) -> HttpResponse:
        raise CircuitOpenError("search", retry_after=2.5, state="open")

    def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("a bug in a view")

    async def async_index(request: HttpRequest) -> HttpResponse:
        return HttpResponse("async")

    async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in (b"x", b"y"):
                yield chunk

        return StreamingHttpResponse(chunks(), content_type="text/plain")

    @rate_limited("1/minute", key=client_ip)
    async def async_decorated(request: HttpRequest) -> HttpResponse:
        return HttpResponse("async decorated")

    return urlconf_module(
        "tests.web.django_urls",
        [
            path("", index),
            path("items/<int:item_id>", item),
            path("stream", stream),
            path("decorated", decorated),
            path("down", down),
            path("broken", broken),
            path("async", async_index),
            path("async/stream", async_stream),
            path("async/decorated", async_decorated),
        ],
    )


urlpatterns = urlconf().urlpatterns
