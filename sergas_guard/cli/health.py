"""``sergas-guard health``: run the configured health checks in this process.

Exit codes: 0 healthy, 1 degraded, 2 unhealthy, 3 configuration error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sergas_guard.errors import ConfigurationError, HealthCheckError
from sergas_guard.health.aggregate import overall_status
from sergas_guard.health.config import load_health_config
from sergas_guard.health.formats import plain_json
from sergas_guard.health.registry import HealthCheckRegistry
from sergas_guard.health.result import CheckResult, HealthStatus
from sergas_guard.secrets import scrub

__all__ = ["EXIT_CODES", "EXIT_CONFIG_ERROR", "command"]

EXIT_CODES = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.UNHEALTHY: 2,
    HealthStatus.UNKNOWN: 2,
}
EXIT_CONFIG_ERROR = 3
CONFIG_ENV = "SERGAS_GUARD_HEALTH_CONFIG"
DEFAULT_CONFIG = "sergas-guard.toml"
_STYLES = {
    HealthStatus.HEALTHY: "green",
    HealthStatus.DEGRADED: "yellow",
    HealthStatus.UNHEALTHY: "red",
    HealthStatus.UNKNOWN: "magenta",
}


def _config_path(option: str | None) -> Path:
    if option:
        return Path(option)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if Path(DEFAULT_CONFIG).is_file():
        return Path(DEFAULT_CONFIG)
    raise ConfigurationError(
        f"no health configuration: pass --config FILE, set {CONFIG_ENV} "
        f"or create ./{DEFAULT_CONFIG}",
        field="config",
    )


def _require_checks(registry: HealthCheckRegistry, tags: tuple[str, ...]) -> None:
    # A run that checks nothing would report "healthy" about nothing: a setup mistake.
    if not len(registry):
        raise ConfigurationError("the configuration enables no health checks", field="checks")
    if tags and not any(check.tags & set(tags) for check in registry):
        raise ConfigurationError(f"no health check has any of the tags {list(tags)}", field="tag")


async def _run(registry: HealthCheckRegistry, tags: tuple[str, ...]) -> dict[str, CheckResult]:
    try:
        return await registry.check_all(tags=tags or None, use_cache=False)
    finally:
        await registry.stop()  # cancel what outlived the deadline before the loop closes


def _value(result: CheckResult) -> str:
    if result.observed_value is None:
        return "-"
    return f"{result.observed_value:g} {result.observed_unit or ''}".strip()


def _table(results: dict[str, CheckResult], verbose: bool) -> Table:
    status = overall_status(results.values())
    table = Table(title=f"Health: [{_STYLES[status]}]{status.value}[/]")
    for header in ("check", "status", "value", "time (ms)", "message"):
        table.add_column(header, overflow="fold")
    if verbose:
        table.add_column("critical")
        table.add_column("tags")
        table.add_column("details", overflow="fold")
    for result in results.values():
        row = [
            result.name,
            f"[{_STYLES[result.status]}]{result.status.value}[/]",
            _value(result),
            f"{result.duration * 1000:.1f}",
            result.message,
        ]
        if verbose:
            details = ", ".join(f"{key}={value}" for key, value in result.details.items())
            row += ["yes" if result.critical else "no", ", ".join(sorted(result.tags)), details]
        table.add_row(*row)
    return table


@click.command(name="health")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help=f"TOML file of checks (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show criticality, tags and details.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--tag", "tags", multiple=True, help="Only checks with this tag (repeatable).")
def command(config_file: str | None, verbose: bool, as_json: bool, tags: tuple[str, ...]) -> None:
    """Run the configured health checks and report.

    Exit code 0 healthy, 1 degraded, 2 unhealthy, 3 configuration error.
    """
    # The table reports every failure; the library's own warnings would repeat them
    # on stderr through logging's last-resort handler.
    health_logger = logging.getLogger("sergas_guard.health")
    if not any(isinstance(h, logging.NullHandler) for h in health_logger.handlers):
        health_logger.addHandler(logging.NullHandler())
    try:
        registry = load_health_config(_config_path(config_file)).build_registry()
        _require_checks(registry, tags)
    except (ConfigurationError, HealthCheckError) as exc:
        # Raise sites scrub with what they know; this pass guards what they missed.
        click.echo(f"configuration error: {scrub(str(exc))}", err=True)
        click.get_current_context().exit(EXIT_CONFIG_ERROR)
    results = asyncio.run(_run(registry, tags))
    status = overall_status(results.values())
    if as_json:
        click.echo(json.dumps(plain_json(results, details=True), indent=2))
    else:
        Console().print(_table(results, verbose))
    click.get_current_context().exit(EXIT_CODES[status])
