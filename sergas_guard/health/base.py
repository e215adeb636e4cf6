"""The health check base class: times, bounds and dates a probe, and never lets it crash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health.result import CheckResult, HealthStatus, Observation
from sergas_guard.secrets import credentials_problem, scrub, url_secrets
from sergas_guard.validation import flag, seconds, strings, valid_name

__all__ = [
    "DEFAULT_TAGS",
    "DEFAULT_TIMEOUT",
    "HealthCheck",
    "ProbeOutcome",
    "check_credentials",
    "describe_error",
    "to_observation",
    "url_secrets",
]

DEFAULT_TIMEOUT = 5.0
# Dependency checks decide readiness unless told otherwise (see docs/health.md).
DEFAULT_TAGS = frozenset({"ready"})
_MAX_MESSAGE = 500

ProbeOutcome = Observation | CheckResult | HealthStatus | bool | str | Mapping[str, Any] | None


def describe_error(exc: BaseException, *secrets: str) -> str:
    """A one-line, secret-free description of an exception for a health message."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _clip(scrub(" ".join(text.split()), *secrets))


def check_credentials(name: str, url: str, forbidden: str = "/?#") -> None:
    """Refuse a URL a driver would misread (see :func:`~sergas_guard.secrets.credentials_problem`).

    Raises HealthCheckError naming the check, with the URL scrubbed.
    """
    problem = credentials_problem(url, forbidden)
    if problem:
        raise HealthCheckError(f"{name!r}: {problem}")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def to_observation(outcome: ProbeOutcome) -> Observation:
    """Read what a probe or a user's check function returned.

    ``True``/``None`` mean healthy, ``False`` unhealthy; a :class:`HealthStatus` (or its
    string value), an :class:`Observation` or a :class:`CheckResult` are taken as they are;
    a mapping with a ``status`` (and optionally ``message``, ``observed_value``,
    ``observed_unit``, ``details``; other keys become details) is read as an observation.
    Raises HealthCheckError for anything else.
    """
    if outcome is None or outcome is True:
        return Observation(HealthStatus.HEALTHY)
    if outcome is False:
        return Observation(HealthStatus.UNHEALTHY, "check returned False")
    if isinstance(outcome, Observation):
        return outcome
    if isinstance(outcome, HealthStatus):
        return Observation(outcome)
    if isinstance(outcome, CheckResult):
        return Observation(
            outcome.status,
            outcome.message,
            outcome.observed_value,
            outcome.observed_unit,
            outcome.details,
        )
    if isinstance(outcome, str) and outcome in HealthStatus._value2member_map_:
        return Observation(HealthStatus(outcome))
    if isinstance(outcome, Mapping) and "status" in outcome:
        return _mapping_observation(outcome)
    raise HealthCheckError(
        f"a check returned {type(outcome).__name__}; expected bool, HealthStatus, "
        "Observation, CheckResult or a mapping with a status"
    )


def _mapping_observation(outcome: Mapping[str, Any]) -> Observation:
    # {"status": "degraded", "message": ..., "observed_value": ..., ...}, as many
    # hand-written health functions return.
    status = to_observation(outcome["status"]).status
    extra = {k: v for k, v in outcome.items() if k not in _MAPPING_FIELDS}
    return Observation(
        status,
        str(outcome.get("message", "")),
        outcome.get("observed_value"),
        outcome.get("observed_unit"),
        {**outcome.get("details", {}), **extra},
    )


_MAPPING_FIELDS = frozenset({"status", "message", "observed_value", "observed_unit", "details"})


def _validate(name: str, timeout: float) -> None:
    valid_name(name, "name", error=HealthCheckError)
    if ":" in name or "/" in name:
        # ':' separates component and measurement in health+json; '/' would break the route.
        raise HealthCheckError(
            f"health check name {name!r} must not contain ':' or '/'", field="name"
        )
    seconds(timeout, "timeout", error=HealthCheckError)


class HealthCheck:
    """Base of every health check.

    Subclasses implement :meth:`probe` (async, returns an :class:`Observation`, a
    :class:`HealthStatus` or a bool, raises on failure); :meth:`check` runs it under
    ``timeout``, measures it and turns a timeout or an exception into an UNHEALTHY
    result with a short, scrubbed message. A subclass may instead override
    :meth:`check` itself; the registry still bounds and guards it.

    ``critical=False`` makes a failure of this check degrade the service instead of
    making it unhealthy. ``tags`` select checks for routes (``"ready"`` by default).
    """

    #: health+json ``componentType`` and the measurement half of its ``component:measurement`` key.
    component_type: str = "component"
    measurement: str = "status"

    def __init__(
        self,
        name: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _validate(name, timeout)
        self.name = name
        self.timeout = float(timeout)
        self.critical = flag(critical, "critical", error=HealthCheckError)
        self.tags = (
            DEFAULT_TAGS
            if tags is None
            else frozenset(strings(tags, "tags", error=HealthCheckError))
        )
        self.clock = clock
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, critical={self.critical})"

    def secrets(self) -> tuple[str, ...]:
        """Literal secrets (passwords, tokens) to scrub from this check's output."""
        return self._secrets

    async def probe(self) -> ProbeOutcome:
        """Look at the dependency once; raise on failure. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement probe() or check()")

    async def check(self) -> CheckResult:
        """Run :meth:`probe` under ``timeout``; never raises (except cancellation)."""
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                outcome = await self.probe()
            observation = to_observation(outcome)
        except TimeoutError as exc:
            reason = f"timed out after {self.timeout:g}s"
            detail = describe_error(exc, *self.secrets())
            message = reason if detail == "timed out" else f"{reason} ({detail})"
            observation = Observation(HealthStatus.UNHEALTHY, message)
        except Exception as exc:
            observation = Observation(HealthStatus.UNHEALTHY, describe_error(exc, *self.secrets()))
        return self.make_result(observation, self.clock.monotonic() - started)

    def make_result(self, observation: Observation, duration: float) -> CheckResult:
        """Date and scrub an observation into this check's :class:`CheckResult`."""
        secrets = self.secrets()
        message = _clip(scrub(observation.message, *secrets))
        return CheckResult(
            name=self.name,
            status=observation.status,
            message=message,
            observed_value=observation.observed_value,
            observed_unit=observation.observed_unit,
            duration=max(0.0, duration),
            time=self.clock.time(),
            critical=self.critical,
            tags=self.tags,
            component_type=self.component_type,
            measurement=self.measurement,
            details=_scrub_details(observation.details, secrets),
        )


def _scrub_details(details: Mapping[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: scrub(value, *secrets) if isinstance(value, str) else value
        for key, value in details.items()
    }
