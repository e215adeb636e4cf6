"""HTTP faces of a refused call: 503 Service Unavailable, ``Retry-After``, problem+json.

:func:`circuit_open_exception_handler` plugs into Starlette/FastAPI
(``app.add_exception_handler(CircuitOpenError, circuit_open_exception_handler)``);
:func:`circuit_open_wsgi_response` gives WSGI code the same response as
``(status_line, headers, body)``. Both are built by :func:`circuit_open_parts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sergas_guard.errors import CircuitOpenError
from sergas_guard.problem import (
    PROBLEM_CONTENT_TYPE,
    problem_body,
    problem_headers,
    retry_after_header,
    status_line,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "CIRCUIT_OPEN_STATUS",
    "CIRCUIT_OPEN_TYPE",
    "circuit_open_exception_handler",
    "circuit_open_parts",
    "circuit_open_response",
    "circuit_open_wsgi_response",
]

CIRCUIT_OPEN_STATUS = 503
#: The problem ``type`` URI of a refused call (a stable identifier, not a fetchable page).
CIRCUIT_OPEN_TYPE = "urn:sergas-guard:problem:circuit-open"


def circuit_open_parts(error: CircuitOpenError) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the 503 answering a call that ``error`` refused."""
    retry_after = retry_after_header(error.retry_after)
    body = problem_body(
        status=CIRCUIT_OPEN_STATUS,
        title="Service Unavailable",
        detail=f"a dependency of this service is unavailable; retry after {retry_after} s",
        type_=CIRCUIT_OPEN_TYPE,
        circuit=error.name,
        state=error.state,
        retry_after=int(retry_after),
    )
    return CIRCUIT_OPEN_STATUS, problem_headers(body, ("retry-after", retry_after)), body


def circuit_open_response(error: CircuitOpenError) -> Response:
    """A Starlette response: 503 with ``Retry-After`` and a problem+json body."""
    from starlette.responses import Response

    status, headers, body = circuit_open_parts(error)
    response = Response(content=body, status_code=status, media_type=PROBLEM_CONTENT_TYPE)
    response.headers["retry-after"] = dict(headers)["retry-after"]
    return response


async def circuit_open_exception_handler(request: Request, error: Exception) -> Response:
    """Starlette/FastAPI exception handler for :class:`CircuitOpenError`.

    Raises TypeError when registered for another exception type (a wiring mistake).
    """
    if not isinstance(error, CircuitOpenError):
        raise TypeError(f"circuit_open_exception_handler got {type(error).__name__}")
    return circuit_open_response(error)


def circuit_open_wsgi_response(error: CircuitOpenError) -> tuple[str, list[tuple[str, str]], bytes]:
    """The same 503 for WSGI: ``(status_line, headers, body)`` for ``start_response``."""
    status, headers, body = circuit_open_parts(error)
    return status_line(status), headers, body
