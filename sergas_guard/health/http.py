"""Health of an HTTP dependency: expected status within a latency budget (via httpx)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import HealthCheckError
from sergas_guard.health.base import DEFAULT_TIMEOUT, HealthCheck, check_credentials
from sergas_guard.health.result import HealthStatus, Observation
from sergas_guard.health.thresholds import check_settings, latency_observation
from sergas_guard.secrets import is_secret_name, scrub, scrub_url, url_secrets
from sergas_guard.validation import valid_name

__all__ = ["HttpHealthCheck"]


def _expected_statuses(name: str, expected: int | Iterable[int]) -> frozenset[int]:
    statuses = frozenset([expected] if isinstance(expected, int) else expected)
    if not statuses or not all(isinstance(s, int) and 100 <= s <= 599 for s in statuses):
        raise HealthCheckError(
            f"{name!r}: expected_status must be HTTP status codes (100-599)",
            field="expected_status",
        )
    return statuses


class HttpHealthCheck(HealthCheck):
    """Checks an HTTP endpoint of a dependency.

    Sends ``method`` to ``url``; UNHEALTHY unless the status is in ``expected_status``
    (one code or several, e.g. ``range(200, 300)``), DEGRADED when the reply took longer
    than ``degraded_latency`` seconds. Redirects are not followed unless asked, so a
    login redirect does not pass for health. Credentials in the URL and the values of
    sensitive headers (``Authorization``, ``Cookie``, ``*token*``, ``*key*``...) are
    scrubbed from the output. Needs httpx; raises HealthCheckError when it is missing
    or the URL or the statuses are invalid.
    """

    component_type = "system"
    measurement = "responseTime"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        expected_status: int | Iterable[int] = 200,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        degraded_latency: float | None = 1.0,
        follow_redirects: bool = False,
        verify: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        critical: bool = True,
        tags: Iterable[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(name, timeout=timeout, critical=critical, tags=tags, clock=clock)
        check_settings(("url", url), degraded_latency)
        # Only what the parser refuses: an '@' in a path or query is common in HTTP URLs.
        check_credentials(name, url, forbidden="")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HealthCheckError(f"{name!r}: {scrub_url(url)!r} is not an http(s) URL")
        try:
            self._httpx: Any = importlib.import_module("httpx")
        except ModuleNotFoundError:
            raise HealthCheckError(
                f"{name!r}: HTTP checks need httpx (pip install httpx)"
            ) from None
        try:
            self._httpx.URL(url)
        except self._httpx.InvalidURL:
            # httpx's own message quotes the part it misread (with a raw '/' in a password,
            # the password's head as the "port"): never shown.
            raise HealthCheckError(
                f"{name!r}: {scrub_url(url)!r} is not a URL httpx can read (a '/', '?' or '#' "
                "in a user name or password must be percent-encoded)",
                field="url",
            ) from None
        self._url = url
        self.expected_status = _expected_statuses(name, expected_status)
        self.method = valid_name(method, "method", max_length=20, error=HealthCheckError).upper()
        if headers is not None and not isinstance(headers, Mapping):
            raise HealthCheckError(
                f"headers must be a mapping, not {headers!r:.80}", field="headers"
            )
        self._headers = dict(headers or {})
        self.degraded_latency = degraded_latency
        self.follow_redirects = follow_redirects
        self.verify = verify
        self._secrets = tuple(
            value for key, value in self._headers.items() if is_secret_name(key) and value
        ) + url_secrets(url)

    @property
    def url(self) -> str:
        """The URL with credentials replaced by ``***``."""
        return scrub(self._url, *self._secrets)

    async def probe(self) -> Observation:
        async with self._httpx.AsyncClient(
            timeout=self.timeout, verify=self.verify, follow_redirects=self.follow_redirects
        ) as client:
            started = self.clock.monotonic()
            response = await client.request(self.method, self._url, headers=self._headers)
            elapsed = self.clock.monotonic() - started
        details = {"status_code": response.status_code}
        observation = latency_observation(elapsed, self.degraded_latency, details)
        if response.status_code not in self.expected_status:
            expected = ", ".join(str(code) for code in sorted(self.expected_status)[:5])
            return Observation(
                HealthStatus.UNHEALTHY,
                f"unexpected HTTP status {response.status_code} (expected {expected})",
                observation.observed_value,
                observation.observed_unit,
                details,
            )
        return observation
