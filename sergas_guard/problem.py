"""RFC 9457 problem details (``application/problem+json``), shared by every HTTP edge."""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "problem_body",
    "problem_headers",
    "retry_after_header",
    "status_line",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(
    *, status: int, title: str, detail: str, type_: str = "about:blank", **extensions: Any
) -> bytes:
    """Serialise a problem document; extension members go beside the standard ones."""
    document: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    document.update(extensions)
    return json.dumps(document, separators=(",", ":")).encode()


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up so a client that obeys is admitted."""
    return str(max(0, math.ceil(seconds)))


def problem_headers(body: bytes, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """The headers of a problem response: its content type, ``extra``, its length."""
    return [("content-type", PROBLEM_CONTENT_TYPE), *extra, ("content-length", str(len(body)))]


def status_line(status: int) -> str:
    """``"503 Service Unavailable"``: a status with its standard reason phrase (WSGI)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a status outside the registry still needs a reason phrase
        phrase = "Error"
    return f"{status} {phrase}"
