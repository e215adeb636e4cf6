"""The 429 (and the 503 of an unreachable limiter) as status, headers and body bytes.

Framework-free: the ASGI and WSGI edges and the FastAPI exception handler send what
these functions build. Bodies are RFC 9457 problem documents; a 429 uses the
``quota-exceeded`` problem type of draft-ietf-httpapi-ratelimit-headers, whose
``violated-policies`` member names the policies (as in ``RateLimit-Policy``) that
rejected the request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sergas_guard.errors import ConfigurationError, RateLimitExceeded
from sergas_guard.problem import (
    PROBLEM_CONTENT_TYPE,
    problem_body,
    retry_after_header,
    status_line,
)
from sergas_guard.web.context import current_context
from sergas_guard.web.headers import HeaderList, RecordedDecision

__all__ = [
    "QUOTA_EXCEEDED_TYPE",
    "ProblemText",
    "Rejection",
    "exceeded_rejection",
    "rejection_for",
    "rejection_in_context",
    "too_costly_rejection",
    "unavailable_rejection",
]

QUOTA_EXCEEDED_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An error response: status, headers (lower-case names) and body."""

    status: int
    headers: HeaderList
    body: bytes

    @property
    def status_line(self) -> str:
        """``"429 Too Many Requests"``, as WSGI's start_response wants it."""
        return status_line(self.status)

    def header_dict(self) -> dict[str, str]:
        """The headers as a dict (each name appears once here)."""
        return {name.decode(): value.decode() for name, value in self.headers}


@dataclass(frozen=True, slots=True)
class ProblemText:
    """The words of a 429 problem document.

    ``detail`` is a ``str.format`` template with ``{retry_after}`` (whole seconds),
    ``{policies}`` (the violated policy names) and ``{limit}`` (e.g. ``10 per 60s``).
    """

    title: str = "Too Many Requests"
    detail: str = "Rate limit exceeded ({limit}); retry in {retry_after} seconds."
    type: str = QUOTA_EXCEEDED_TYPE

    def __post_init__(self) -> None:
        try:
            self.render(1, ["default"], "1 per 1s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"detail template {self.detail!r} is invalid: {exc!r}; use {{retry_after}}, "
                "{policies} and {limit}",
                field="detail",
            ) from None

    def render(self, retry_after: int, policies: Sequence[str], limit: str) -> str:
        return self.detail.format(
            retry_after=retry_after, policies=", ".join(policies), limit=limit
        )


def _rejection(
    problem: ProblemText,
    retry_after: float,
    policies: list[str],
    limit: str,
    rate_headers: HeaderList,
) -> Rejection:
    seconds = max(0, math.ceil(retry_after))
    body = problem_body(
        status=429,
        title=problem.title,
        detail=problem.render(seconds, policies, limit),
        type_=problem.type,
        **{"violated-policies": policies},
    )
    headers: HeaderList = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry_after_header(retry_after).encode()),
        *rate_headers,
    ]
    return Rejection(429, headers, body)


def rejection_for(
    recorded: Sequence[RecordedDecision], problem: ProblemText, rate_headers: HeaderList
) -> Rejection:
    """The 429 for a request some of whose ``recorded`` decisions rejected it.

    ``rate_headers`` are the rate-limit headers to include (empty when the response
    wrapper adds them).
    """
    rejected = [entry for entry in recorded if not entry.decision.allowed]
    policies = [name for entry in rejected for name in entry.violated]
    retry_after = max(entry.decision.result.retry_after for entry in rejected)
    limit = "; ".join(
        spec.describe()
        for entry in rejected
        for spec, result in zip(entry.decision.specs, entry.decision.results, strict=True)
        if not result.allowed
    )
    return _rejection(problem, retry_after, policies, limit, rate_headers)


def exceeded_rejection(
    exc: RateLimitExceeded, problem: ProblemText, rate_headers: HeaderList
) -> Rejection:
    """The 429 for a RateLimitExceeded whose decision is not known (raised by any code)."""
    return _rejection(problem, exc.retry_after, [], exc.limit, rate_headers)


def rejection_in_context(exc: RateLimitExceeded, problem: ProblemText) -> Rejection:
    """The 429 for a RateLimitExceeded raised while serving a request.

    Inside a request context that recorded the rejecting decision (a dependency, a
    ``@rate_limited`` endpoint), the 429 carries every recorded decision's policies and
    headers; elsewhere it is built from the exception alone.
    """
    context = current_context()
    if context is not None and any(not e.decision.allowed for e in context.recorded):
        return rejection_for(context.recorded, problem, context.take_headers())
    return exceeded_rejection(exc, problem, [])


def unavailable_rejection(retry_after: float = 1.0) -> Rejection:
    """The 503 sent when the storage is unreachable and the policy is ``fail_closed``."""
    body = problem_body(
        status=503,
        title="Service Unavailable",
        detail="The rate limiter cannot reach its storage; try again shortly.",
    )
    headers: HeaderList = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry_after_header(retry_after).encode()),
    ]
    return Rejection(503, headers, body)


def too_costly_rejection(limit: str, capacity: int) -> Rejection:
    """The 413 for a request that costs more than ``limit`` can ever admit at once.

    No wait would admit it, so there is no ``Retry-After`` (a 429 would invite
    clients to retry the same request for ever); the storage was not asked.
    """
    body = problem_body(
        status=413,
        title="Content Too Large",
        detail=(
            f"This request costs more than the rate limit {limit} can ever admit at once "
            f"({capacity}); no wait would admit it. Send a smaller request."
        ),
    )
    headers: HeaderList = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    return Rejection(413, headers, body)
