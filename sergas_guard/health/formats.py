"""Wire formats of a health report: IETF health+json, a plain JSON summary, a text view.

All pure: results in, documents out. ``details=False`` gives what an anonymous caller
may see, the overall status alone.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from sergas_guard.health.aggregate import Results, as_list, overall_status, summarize
from sergas_guard.health.result import CheckResult, HealthStatus

__all__ = [
    "HEALTH_JSON_CONTENT_TYPE",
    "Format",
    "choose_format",
    "health_json",
    "plain_json",
    "render",
    "text_view",
]

HEALTH_JSON_CONTENT_TYPE = "application/health+json"
Format = Literal["health+json", "json", "text"]

_MEDIA_TYPES: dict[str, Format] = {
    HEALTH_JSON_CONTENT_TYPE: "health+json",
    "application/json": "json",
    "text/plain": "text",
}
_CONTENT_TYPES: dict[Format, str] = {
    "health+json": HEALTH_JSON_CONTENT_TYPE,
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
}
_ICONS = {
    HealthStatus.HEALTHY: "ok  ",
    HealthStatus.DEGRADED: "WARN",
    HealthStatus.UNHEALTHY: "FAIL",
    HealthStatus.UNKNOWN: "????",
}


def _accept_entries(accept: str) -> list[tuple[float, int, str]]:
    entries = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            entries.append((-quality, index, media.lower()))
    return sorted(entries)


def choose_format(accept: str | None, *, verbose: bool = False) -> Format:
    """The format a request asks for.

    ``?verbose`` asks for the text view; otherwise the ``Accept`` header decides
    (q-values honoured) and health+json is the default, also for ``*/*``.
    """
    if verbose:
        return "text"
    for _, _, media in _accept_entries(accept or ""):
        if media in _MEDIA_TYPES:
            return _MEDIA_TYPES[media]
        if media in ("*/*", "application/*"):
            return "health+json"
        if media == "text/*":
            return "text"
    return "health+json"


def _health_json_check(result: CheckResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "componentId": result.name,
        "componentType": result.component_type,
        "status": result.status.health_json,
        "time": result.time_iso,
    }
    if result.observed_value is not None:
        entry["observedValue"] = result.observed_value
        entry["observedUnit"] = result.observed_unit or ""
    if result.message:
        entry["output"] = result.message
    return entry


def health_json(
    results: Results, *, details: bool, service: dict[str, str] | None = None
) -> dict[str, Any]:
    """A draft-inadarei-api-health-check document.

    ``status`` is pass/warn/fail; with ``details`` each check appears under
    ``checks["<name>:<measurement>"]`` with ``observedValue``, ``observedUnit``,
    ``componentType``, ``time`` and ``output``. ``service`` adds top-level members such
    as ``serviceId``, ``version``, ``releaseId`` or ``description``.
    """
    items = as_list(results)
    status = overall_status(items)
    document: dict[str, Any] = {"status": status.health_json}
    if not details:
        return document
    document.update(service or {})
    failing = [r for r in items if r.status is not HealthStatus.HEALTHY]
    if failing:
        document["output"] = "; ".join(f"{r.name}: {r.message or r.status.value}" for r in failing)
    document["checks"] = {f"{r.name}:{r.measurement}": [_health_json_check(r)] for r in items}
    return document


def plain_json(results: Results, *, details: bool) -> dict[str, Any]:
    """The registry's summary (``status``, counts, ``checks``), or just ``status``."""
    summary = summarize(results)
    summary["status"] = summary["status"].value
    return summary if details else {"status": summary["status"]}


def text_view(results: Results, *, details: bool) -> str:
    """A human-readable report: the status line, then one line per check with details."""
    items = as_list(results)
    lines = [f"status: {overall_status(items).value}"]
    if details:
        for result in items:
            value = (
                f"{result.observed_value:g} {result.observed_unit or ''}".strip()
                if result.observed_value is not None
                else "-"
            )
            flag = "" if result.critical else " (non-critical)"
            line = f"[{_ICONS[result.status]}] {result.name}{flag}: {result.status.value}, {value}"
            lines.append(f"{line} — {result.message}" if result.message else line)
    return "\n".join(lines) + "\n"


def render(
    results: Results, fmt: Format, *, details: bool, service: dict[str, str] | None = None
) -> tuple[str, bytes]:
    """``(content_type, body)`` of the report in ``fmt``."""
    if fmt == "text":
        body = text_view(results, details=details).encode()
    elif fmt == "json":
        body = json.dumps(plain_json(results, details=details)).encode()
    else:
        body = json.dumps(health_json(results, details=details, service=service)).encode()
    return _CONTENT_TYPES[fmt], body
