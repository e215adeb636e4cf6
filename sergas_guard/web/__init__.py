"""Framework-free pieces shared by the ASGI, WSGI and FastAPI edges.

Rules and plans (:mod:`.rules`), client identity behind proxies (:mod:`.identity`),
key functions (:mod:`.keys`), response headers (:mod:`.headers`), 429 bodies
(:mod:`.rejection`) and the decision engine (:mod:`.engine`). See docs/web.md.
"""

from __future__ import annotations

from sergas_guard.web.headers import HeaderMode
from sergas_guard.web.identity import ClientAddressResolver
from sergas_guard.web.keys import api_key, authenticated_user, client_ip, request_key
from sergas_guard.web.rejection import ProblemText
from sergas_guard.web.request import RequestInfo
from sergas_guard.web.rules import Rule

__all__ = [
    "ClientAddressResolver",
    "HeaderMode",
    "ProblemText",
    "RequestInfo",
    "Rule",
    "api_key",
    "authenticated_user",
    "client_ip",
    "request_key",
]
