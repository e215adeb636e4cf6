"""RFC 9457 problem details (``application/problem+json``), shared by every HTTP edge."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["PROBLEM_CONTENT_TYPE", "problem_body", "retry_after_header"]

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
