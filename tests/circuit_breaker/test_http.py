"""A refused call over HTTP: 503, Retry-After, problem+json, through real servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from sergas_guard.circuit_breaker import CircuitBreakerManager, CircuitOpenError, circuit_breaker
from sergas_guard.circuit_breaker.http import (
    CIRCUIT_OPEN_TYPE,
    circuit_open_exception_handler,
    circuit_open_parts,
    circuit_open_wsgi_response,
)
from sergas_guard.clock import ManualClock
from sergas_guard.problem import PROBLEM_CONTENT_TYPE
from tests.circuit_breaker.support import Boom, config
from tests.web.conftest import serving


def test_the_503_names_the_circuit_and_rounds_retry_after_up() -> None:
    status, headers, body = circuit_open_parts(
        CircuitOpenError("payments", retry_after=2.1, state="open")
    )
    assert status == 503
    assert dict(headers)["retry-after"] == "3"
    assert dict(headers)["content-type"] == PROBLEM_CONTENT_TYPE
    assert int(dict(headers)["content-length"]) == len(body)
    document = json.loads(body)
    assert document["status"] == 503
    assert document["type"] == CIRCUIT_OPEN_TYPE
    assert (document["circuit"], document["state"], document["retry_after"]) == (
        "payments",
        "open",
        3,
    )


async def test_the_starlette_handler_refuses_other_exceptions() -> None:
    with pytest.raises(TypeError):
        await circuit_open_exception_handler(None, ValueError("x"))  # type: ignore[arg-type]


def test_fastapi_over_uvicorn_answers_503_once_the_circuit_opens() -> None:
    manager = CircuitBreakerManager(config(wait_duration_in_open=30.0), clock=ManualClock())

    @circuit_breaker("inventory", manager=manager)
    async def inventory(item: str) -> dict[str, str]:
        raise Boom(f"inventory service down for {item}")

    app = FastAPI()
    app.add_exception_handler(CircuitOpenError, circuit_open_exception_handler)

    @app.get("/items/{item}")
    async def item(item: str) -> Any:
        try:
            return await inventory(item)
        except Boom:
            return JSONResponse({"error": "upstream failed"}, status_code=502)

    with serving(app) as base_url, httpx.Client(base_url=base_url) as http:
        statuses = [http.get("/items/42").status_code for _ in range(4)]
        refused = http.get("/items/42")
    assert statuses == [502] * 4
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert refused.json()["circuit"] == "inventory"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def wsgi_server() -> Iterator[Callable[[Any], str]]:
    servers: list[WSGIServer] = []

    def serve(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_wsgi_app_answers_the_same_503(wsgi_server: Callable[[Any], str]) -> None:
    manager = CircuitBreakerManager(config())
    breaker = manager.get_or_create("search")
    breaker.transition_to_forced_open()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            body = breaker.call_sync(lambda: b"results")
        except CircuitOpenError as refused:
            status, headers, problem = circuit_open_wsgi_response(refused)
            start_response(status, headers)
            return [problem]
        start_response("200 OK", [("content-type", "text/plain")])
        return [body]

    response = httpx.get(wsgi_server(app) + "/search")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert response.json()["state"] == "forced_open"
