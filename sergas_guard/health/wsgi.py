"""The health routes for WSGI apps (Flask, Django): same endpoint, one background loop.

Checks are async, WSGI is not. Rather than start an event loop per request, the
adapter keeps one loop running in a daemon thread and hands each request's work to
it, so concurrent requests from a threaded server share one run of each check.

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    flask_app.wsgi_app = DispatcherMiddleware(
        flask_app.wsgi_app, {"/ops": HealthWSGIApp(registry)}
    )
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from http import HTTPStatus
from typing import Any, TypeVar, Unpack
from urllib.parse import parse_qsl

from sergas_guard.health.endpoint import (
    EndpointOptions,
    HealthEndpoint,
    HealthRequest,
    problem_response,
)
from sergas_guard.health.registry import HealthCheckRegistry

__all__ = ["HealthWSGIApp"]

T = TypeVar("T")
StartResponse = Callable[..., Any]


class _LoopThread:
    """One event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._ensure()).result()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="sergas-guard-health-wsgi", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self, finish: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(finish(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _health_request(environ: dict[str, Any]) -> HealthRequest:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    return HealthRequest(
        path=environ.get("PATH_INFO", "") or "/",
        query=dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)),
        headers=headers,
        client=environ.get("REMOTE_ADDR"),
        raw=environ,
    )


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


class HealthWSGIApp:
    """A WSGI application serving the health routes of ``registry``.

    Takes the options of :class:`~sergas_guard.health.endpoint.HealthEndpoint`
    (``details``, ``status_codes``, ``ready_tags``, ``groups``...); an authorisation
    callable receives a HealthRequest whose ``raw`` is the WSGI ``environ``. Paths are
    matched against ``PATH_INFO``, so mount it under a prefix with a dispatcher.
    :meth:`close` stops its background loop.
    """

    def __init__(self, registry: HealthCheckRegistry, **options: Unpack[EndpointOptions]) -> None:
        self.endpoint = HealthEndpoint(registry, **options)
        self._loop = _LoopThread()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = _health_request(environ)
        view = self.endpoint.resolve(request.path)
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            answer = problem_response(405, "Method Not Allowed", "health routes answer GET only")
        elif view is None:
            answer = problem_response(404, "Not Found", f"no health route at {request.path!r}")
        else:
            answer = self._loop.run(self.endpoint.respond(view, request))
        headers = [*answer.headers, ("content-length", str(len(answer.body)))]
        start_response(_status_line(answer.status_code), headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]

    def close(self) -> None:
        """Stop the background loop after cancelling the checks still running on it."""
        self._loop.close(self.endpoint.registry.stop)
