"""Framework-neutral health endpoint: a request's view in, status/headers/body out.

The ASGI router (:mod:`sergas_guard.health.routes`) and the WSGI adapter
(:mod:`sergas_guard.health.wsgi`) only translate their request into a
:class:`HealthRequest` and send back the :class:`HealthResponse`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from sergas_guard.errors import HealthCheckError
from sergas_guard.health.aggregate import overall_status
from sergas_guard.health.base import describe_error
from sergas_guard.health.formats import choose_format, render
from sergas_guard.health.registry import HealthCheckRegistry
from sergas_guard.health.result import CheckResult, HealthStatus
from sergas_guard.problem import PROBLEM_CONTENT_TYPE, problem_body

__all__ = [
    "DEFAULT_STATUS_CODES",
    "Authorizer",
    "DetailsPolicy",
    "EndpointOptions",
    "HealthEndpoint",
    "HealthRequest",
    "HealthResponse",
    "View",
    "problem_response",
]

logger = logging.getLogger("sergas_guard.health")

DEFAULT_STATUS_CODES: Mapping[HealthStatus, int] = {
    HealthStatus.HEALTHY: 200,
    HealthStatus.DEGRADED: 200,
    HealthStatus.UNHEALTHY: 503,
    HealthStatus.UNKNOWN: 503,
}
_FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """What the endpoint needs of a request; ``raw`` is the framework's own object
    (a Starlette ``Request`` or a WSGI ``environ``) for authorisation callables."""

    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    client: str | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class HealthResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class View:
    """Which checks a route reports: ``live``, ``ready``, ``all``, a tag ``group``, a ``check``."""

    kind: Literal["live", "ready", "all", "group", "check"]
    name: str = ""


Authorizer = Callable[[HealthRequest], bool | Awaitable[bool]]
DetailsPolicy = Literal["never", "always"] | Authorizer


class EndpointOptions(TypedDict, total=False):
    """The options of :class:`HealthEndpoint`, shared by the ASGI and WSGI edges."""

    details: DetailsPolicy
    status_codes: Mapping[HealthStatus, int] | None
    ready_tags: Iterable[str]
    live_tags: Iterable[str]
    groups: Mapping[str, Iterable[str]] | None
    service: Mapping[str, str] | None
    live_path: str
    ready_path: str
    health_path: str


class HealthEndpoint:
    """Answers health requests for a registry; shared by the ASGI and WSGI edges.

    ``details``: ``"never"`` (default; callers see the status only), ``"always"``, or a
    callable taking a :class:`HealthRequest` and returning (or awaiting) True when this
    caller may see per-check details. ``status_codes`` overrides entries of
    :data:`DEFAULT_STATUS_CODES`. ``ready_tags``/``live_tags`` pick the checks of
    ``/readyz`` and ``/livez`` (none for liveness by default: the process answering is the
    proof); ``groups`` maps extra route names to tags (``/health/<group>``).
    ``service`` adds health+json members (``serviceId``, ``version``...).
    Raises HealthCheckError for a bad option.
    """

    def __init__(
        self,
        registry: HealthCheckRegistry,
        *,
        details: DetailsPolicy = "never",
        status_codes: Mapping[HealthStatus, int] | None = None,
        ready_tags: Iterable[str] = ("ready",),
        live_tags: Iterable[str] = (),
        groups: Mapping[str, Iterable[str]] | None = None,
        service: Mapping[str, str] | None = None,
        live_path: str = "/livez",
        ready_path: str = "/readyz",
        health_path: str = "/health",
    ) -> None:
        if not callable(details) and details not in ("never", "always"):
            raise HealthCheckError(
                "details must be 'never', 'always' or a callable", field="details"
            )
        codes = dict(DEFAULT_STATUS_CODES)
        for status, code in (status_codes or {}).items():
            if not (isinstance(code, int) and 100 <= code <= 599):
                raise HealthCheckError(
                    f"status code for {status} must be an HTTP status", field="status_codes"
                )
            codes[HealthStatus(status)] = code
        self.registry = registry
        self.details = details
        self.status_codes = codes
        self.ready_tags = frozenset(ready_tags)
        self.live_tags = frozenset(live_tags)
        self.groups = {name: frozenset(tags) for name, tags in (groups or {}).items()}
        for name in self.groups:
            if not name or "/" in name:
                raise HealthCheckError(
                    f"group name {name!r} must be one path segment", field="groups"
                )
        self.service = dict(service or {})
        self.paths = {"live": live_path, "ready": ready_path, "all": health_path}

    def resolve(self, path: str) -> View | None:
        """The view a request path names (for edges without their own router)."""
        path = "/" + path.strip("/")
        for kind, own in self.paths.items():
            if path == own:
                return View(kind)  # type: ignore[arg-type]
        prefix = self.paths["all"].rstrip("/") + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return self.view_of(path[len(prefix) :])
        return None

    def view_of(self, name: str) -> View:
        """``/health/<name>``: a tag group if one has that name, else a check."""
        return View("group", name) if name in self.groups else View("check", name)

    async def respond(self, view: View, request: HealthRequest) -> HealthResponse:
        """Run (or reuse) the view's checks and render them as the request asks."""
        if view.kind == "check" and view.name not in self.registry:
            return self._not_found(view.name)
        results = await self._results(view)
        status = overall_status(results.values())
        verbose = (
            "verbose" in request.query and request.query["verbose"].lower() not in _FALSE_WORDS
        )
        fmt = choose_format(request.headers.get("accept"), verbose=verbose)
        details = await self._may_see_details(request)
        content_type, body = render(results, fmt, details=details, service=self.service)
        headers = [
            ("content-type", content_type),
            ("cache-control", "no-store"),
            ("vary", "Accept"),
        ]
        return HealthResponse(self.status_codes[status], headers, body)

    async def _results(self, view: View) -> dict[str, CheckResult]:
        if view.kind == "live":
            if not self.live_tags:
                return {}
            return await self.registry.check_all(tags=self.live_tags, use_cache=True)
        if view.kind == "ready":
            return await self.registry.check_all(tags=self.ready_tags, use_cache=True)
        if view.kind == "group":
            return await self.registry.check_all(tags=self.groups[view.name], use_cache=True)
        if view.kind == "check":
            return await self.registry.check_all(names=[view.name], use_cache=True)
        return await self.registry.check_all(use_cache=True)

    async def _may_see_details(self, request: HealthRequest) -> bool:
        if self.details == "always":
            return True
        if self.details == "never":
            return False
        try:
            verdict = self.details(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:  # a broken authoriser shows nothing, it does not crash
            logger.warning("health details authoriser failed: %s", describe_error(exc))
            return False
        return verdict is True

    def _not_found(self, name: str) -> HealthResponse:
        return problem_response(404, "Not Found", f"no health check or group named {name!r}")


def problem_response(status: int, title: str, detail: str) -> HealthResponse:
    """An RFC 9457 problem+json answer, never cached."""
    body = problem_body(status=status, title=title, detail=detail)
    headers = [("content-type", PROBLEM_CONTENT_TYPE), ("cache-control", "no-store")]
    return HealthResponse(status, headers, body)
