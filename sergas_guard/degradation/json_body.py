"""The JSON object an operator's request carries, read within fixed bounds.

The body is read in chunks and refused once it passes :data:`MAX_BODY_BYTES`, whether
``Content-Length`` announced it, understated it or was absent (chunked): memory never
holds more than the bound. Invalid JSON, JSON's non-standard constants (``NaN``,
``Infinity``) and nesting deeper than :data:`MAX_JSON_DEPTH` are refused as well,
never left to fail deeper down (the decoder's own recursion limit would be a 500).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.requests import Request

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "BodyRefused", "read_json_object"]

#: The largest body accepted: far above any level or flag change an operator sends.
MAX_BODY_BYTES = 64 * 1024
#: The deepest nesting accepted (the object itself is depth 1; its lists are 2).
MAX_JSON_DEPTH = 8


class BodyRefused(Exception):
    """A body that is not accepted: ``status`` (400 or 413) and why, for the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is refused: it is no object).

    Raises BodyRefused(413) for a body over MAX_BODY_BYTES (before reading it when
    ``Content-Length`` says so), BodyRefused(400) for anything but a JSON object
    nested at most MAX_JSON_DEPTH deep.
    """
    declared = request.headers.get("content-length", "")
    digits = declared.lstrip("0")
    if declared.isascii() and declared.isdigit() and int(digits[:12] or "0") > MAX_BODY_BYTES:
        raise BodyRefused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyRefused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        document = json.loads(b"".join(chunks) or b"null", parse_constant=_no_constants)
    except RecursionError:
        raise BodyRefused(400, f"the body is nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError:  # UnicodeDecodeError included
        raise BodyRefused(400, "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BodyRefused(400, "the body must be a JSON object")
    if _deeper_than(document, MAX_JSON_DEPTH):
        raise BodyRefused(400, f"the body is nested deeper than {MAX_JSON_DEPTH}")
    return document


def _deeper_than(document: object, limit: int) -> bool:
    # Iterative: the point is not to trust recursion with a client's nesting.
    pending: list[tuple[object, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in value)
    return False
