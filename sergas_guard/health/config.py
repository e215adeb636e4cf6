"""Health checks from configuration: the ``HEALTH_CHECK_CONFIG`` shape, as TOML.

    interval_seconds = 60
    timeout_seconds = 10

    [checks.database]               # type inferred from the name, or type = "database"
    connection_string = "${DATABASE_URL}"
    max_connections = 20

    [checks.cache]
    redis_url = "redis://localhost:6379/0"

    [checks.external_apis]
    enabled = false
    urls = ["https://payments.example/health"]

``${NAME}`` in a string is replaced by the environment variable ``NAME``, so secrets
stay out of the file. Disabled checks are skipped without further validation.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from sergas_guard.config import GuardModel, env_overrides, load_toml
from sergas_guard.errors import ConfigurationError
from sergas_guard.health.base import HealthCheck
from sergas_guard.health.cache import CacheHealthCheck
from sergas_guard.health.database import DatabaseHealthCheck
from sergas_guard.health.disk import DiskSpaceHealthCheck
from sergas_guard.health.http import HttpHealthCheck
from sergas_guard.health.registry import HealthCheckRegistry
from sergas_guard.health.service import ServiceHealthCheck
from sergas_guard.secrets import REDACTED, is_secret_name, scrub_url

__all__ = ["HealthConfig", "load_health_config"]

_INFERRED_TYPES = {
    "database": "database",
    "db": "database",
    "postgres": "database",
    "postgresql": "database",
    "sqlite": "database",
    "cache": "cache",
    "redis": "cache",
    "external_apis": "http",
    "http": "http",
    "disk": "disk",
    "disk_space": "disk",
}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _CheckConfig(GuardModel):
    enabled: bool = True
    critical: bool = True
    tags: list[str] | None = None
    timeout_seconds: PositiveFloat | None = None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() show URLs, DSNs and sensitive headers scrubbed.
        for name, value in super().__repr_args__():
            yield name, _scrubbed(value)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_url(value)
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    if isinstance(value, dict):
        return {
            key: REDACTED if is_secret_name(str(key)) else _scrubbed(item)
            for key, item in value.items()
        }
    return value


class DatabaseCheckConfig(_CheckConfig):
    type: Literal["database"]
    connection_string: str
    max_connections: PositiveInt | None = None
    degraded_latency_seconds: PositiveFloat | None = 0.5


class CacheCheckConfig(_CheckConfig):
    type: Literal["cache"]
    redis_url: str
    degraded_latency_seconds: PositiveFloat | None = 0.1


class HttpCheckConfig(_CheckConfig):
    type: Literal["http"]
    url: str | None = None
    urls: list[str] = Field(default_factory=list)
    expected_status: list[int] = Field(default_factory=lambda: [200])
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    degraded_latency_seconds: PositiveFloat | None = 1.0

    @model_validator(mode="after")
    def _one_url_at_least(self) -> HttpCheckConfig:
        if self.url is None and not self.urls:
            raise ValueError("an http check needs url or urls")
        return self


class DiskCheckConfig(_CheckConfig):
    type: Literal["disk"]
    path: str = "."
    degraded_free_ratio: float = Field(0.10, gt=0, le=1)
    min_free_ratio: float = Field(0.02, gt=0, le=1)
    min_free_bytes: int = Field(10 * 1024 * 1024, ge=0)


class ServiceCheckConfig(_CheckConfig):
    type: Literal["service"]
    callable: str = Field(pattern=r"^[\w.]+:[\w.]+$")  # "package.module:function"


CheckConfig = Annotated[
    DatabaseCheckConfig | CacheCheckConfig | HttpCheckConfig | DiskCheckConfig | ServiceCheckConfig,
    Field(discriminator="type"),
]


def _expand_env(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            if match[1] not in environ:
                raise ValueError(f"environment variable {match[1]} is not set")
            return environ[match[1]]

        return _ENV_REFERENCE.sub(lookup, value)
    if isinstance(value, list):
        return [_expand_env(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: _expand_env(item, environ) for key, item in value.items()}
    return value


class HealthConfig(GuardModel):
    """Validated health configuration; :meth:`build_registry` turns it into checks."""

    interval_seconds: PositiveFloat = 60.0
    timeout_seconds: PositiveFloat = 10.0
    cache_ttl_seconds: NonNegativeFloat = 5.0
    failure_cache_ttl_seconds: NonNegativeFloat = 1.0
    checks: dict[str, CheckConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _prepare_checks(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("checks"), dict):
            return data
        checks = {}
        for name, entry in data["checks"].items():
            if isinstance(entry, dict):
                if entry.get("enabled", True) is False:
                    continue  # the original config disables checks it does not describe
                entry = _expand_env(entry, os.environ)
                if "type" not in entry and name in _INFERRED_TYPES:
                    entry = {**entry, "type": _INFERRED_TYPES[name]}
            checks[name] = entry
        return {**data, "checks": checks}

    def build_checks(self) -> list[HealthCheck]:
        """One check per enabled entry (an http entry with ``urls`` gives one per URL).

        Raises HealthCheckError or ConfigurationError for a value a check rejects.
        """
        built: list[HealthCheck] = []
        for name, spec in self.checks.items():
            common: dict[str, Any] = {
                "timeout": spec.timeout_seconds or self.timeout_seconds,
                "critical": spec.critical,
                "tags": spec.tags,
            }
            built.extend(_build(name, spec, common))
        return built

    def build_registry(self) -> HealthCheckRegistry:
        """A registry holding :meth:`build_checks`, its deadline a little past the
        slowest check's timeout so each check can report its own timeout."""
        checks = self.build_checks()
        slowest = max((check.timeout for check in checks), default=self.timeout_seconds)
        registry = HealthCheckRegistry(
            timeout=slowest + 1.0,
            cache_ttl=self.cache_ttl_seconds,
            failure_cache_ttl=self.failure_cache_ttl_seconds,
        )
        for check in checks:
            registry.register(check)
        return registry


def _build(name: str, spec: Any, common: dict[str, Any]) -> list[HealthCheck]:
    if isinstance(spec, DatabaseCheckConfig):
        return [
            DatabaseHealthCheck(
                name,
                spec.connection_string,
                spec.max_connections,
                degraded_latency=spec.degraded_latency_seconds,
                **common,
            )
        ]
    if isinstance(spec, CacheCheckConfig):
        return [
            CacheHealthCheck(
                name, spec.redis_url, degraded_latency=spec.degraded_latency_seconds, **common
            )
        ]
    if isinstance(spec, HttpCheckConfig):
        urls = [spec.url] if spec.url else []
        urls += spec.urls
        return [
            HttpHealthCheck(
                name if len(urls) == 1 else f"{name}_{index}",
                url,
                expected_status=spec.expected_status,
                method=spec.method,
                headers=spec.headers,
                degraded_latency=spec.degraded_latency_seconds,
                **common,
            )
            for index, url in enumerate(urls, start=1)
        ]
    if isinstance(spec, DiskCheckConfig):
        return [
            DiskSpaceHealthCheck(
                name,
                spec.path,
                degraded_free_ratio=spec.degraded_free_ratio,
                min_free_ratio=spec.min_free_ratio,
                min_free_bytes=spec.min_free_bytes,
                **common,
            )
        ]
    return [ServiceHealthCheck(name, _import_callable(name, spec.callable), **common)]


def _import_callable(name: str, target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"check {name!r}: cannot import {target!r} ({exc})", field=f"checks.{name}.callable"
        ) from None
    return value


def load_health_config(path: str | os.PathLike[str]) -> HealthConfig:
    """Read and validate a TOML file: its ``[health]`` table, or the whole file.

    ``SERGAS_GUARD_HEALTH__<FIELD>`` environment variables override top-level fields
    (e.g. ``SERGAS_GUARD_HEALTH__TIMEOUT_SECONDS=3``). Raises ConfigurationError naming
    the bad field (or the unreadable file).
    """
    data = load_toml(Path(path))
    section = data.get("health", data)
    if not isinstance(section, dict):
        raise ConfigurationError("the [health] section must be a table", field="health")
    return HealthConfig.validate_mapping({**section, **env_overrides("health")})
