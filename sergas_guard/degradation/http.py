"""HTTP faces of a switched-off feature: 404 or 503 with a problem+json body.

A :class:`~sergas_guard.errors.FeatureDisabledError` reaching a web edge means the
caller asked for something that is off for them. Which status says that depends on
why it is off:

* ``degraded`` (a non-essential flag while the service is DEGRADED or worse) and
  ``maintenance`` (the operator's MAINTENANCE level) are the service shedding the
  feature for a while: **503 Service Unavailable**, the status of a temporary
  overload. The body carries the ``reason`` so a client knows it is worth coming back.
  No ``Retry-After``: a level changes when load or an operator says so, and we cannot
  promise a time.
* Any other reason (``disabled``, ``denied``, ``not_in_rollout``, ``no_user_id``,
  ``unknown``, ...) means the feature does not exist for this caller: **404 Not
  Found**, as GitHub answers for what a caller may not see. A 403, or the reason in
  the body, would tell a user they are outside a rollout or on a deny list.

:func:`feature_disabled_exception_handler` plugs into Starlette/FastAPI
(:func:`sergas_guard.fastapi.install_exception_handlers` registers it);
:func:`feature_disabled_wsgi_response` gives WSGI code the same answer as
``(status_line, headers, body)``. All are built by :func:`feature_disabled_parts`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from sergas_guard.errors import FeatureDisabledError
from sergas_guard.problem import problem_body, problem_headers, status_line

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "FEATURE_DISABLED_TYPE",
    "SHED_REASONS",
    "feature_disabled_exception_handler",
    "feature_disabled_parts",
    "feature_disabled_response",
    "feature_disabled_status",
    "feature_disabled_wsgi_response",
]

#: The problem ``type`` URI of a switched-off feature (a stable identifier, not a page).
FEATURE_DISABLED_TYPE = "urn:sergas-guard:problem:feature-disabled"
#: Reasons meaning the service shed the feature for a while (answered with 503).
SHED_REASONS = frozenset({"degraded", "maintenance"})

Parts = tuple[int, list[tuple[str, str]], bytes]


def feature_disabled_status(reason: str) -> int:
    """503 for a feature shed while the service is degraded or in maintenance, else 404."""
    return int(HTTPStatus.SERVICE_UNAVAILABLE if reason in SHED_REASONS else HTTPStatus.NOT_FOUND)


def feature_disabled_parts(error: FeatureDisabledError) -> Parts:
    """Status, headers and body answering a call that ``error`` refused (404 or 503)."""
    status = feature_disabled_status(error.reason)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        body = problem_body(
            status=status,
            title=HTTPStatus.SERVICE_UNAVAILABLE.phrase,
            detail=f"feature {error.flag!r} is switched off while the service is "
            f"{error.reason}; try again later",
            type_=FEATURE_DISABLED_TYPE,
            feature=error.flag,
            reason=error.reason,
        )
    else:
        # No reason here: "not_in_rollout", "denied" or "no_user_id" would tell the
        # caller how they are targeted; every such caller gets this same document.
        body = problem_body(
            status=status,
            title=HTTPStatus.NOT_FOUND.phrase,
            detail=f"feature {error.flag!r} is not available",
            type_=FEATURE_DISABLED_TYPE,
            feature=error.flag,
        )
    return status, problem_headers(body), body


def feature_disabled_response(error: FeatureDisabledError) -> Response:
    """A Starlette response: 404 or 503 with a problem+json body."""
    from starlette.responses import Response

    status, headers, body = feature_disabled_parts(error)
    return Response(content=body, status_code=status, headers=dict(headers))


async def feature_disabled_exception_handler(request: Request, error: Exception) -> Response:
    """Starlette/FastAPI exception handler for :class:`FeatureDisabledError`.

    Raises TypeError when registered for another exception type (a wiring mistake).
    """
    if not isinstance(error, FeatureDisabledError):
        raise TypeError(f"feature_disabled_exception_handler got {type(error).__name__}")
    return feature_disabled_response(error)


def feature_disabled_wsgi_response(
    error: FeatureDisabledError,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The same answer for WSGI: ``(status_line, headers, body)`` for ``start_response``."""
    status, headers, body = feature_disabled_parts(error)
    return status_line(status), headers, body
