"""The ``sergas-guard`` command line.

Each capability adds its subcommands in a module of its own (``ratelimit.py``,
``health.py``, ...) registered in :func:`_register`; this module only builds the group.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["cli", "main"]

# Modules that each expose a click command or group named ``command``.
_SUBCOMMAND_MODULES = (
    "sergas_guard.cli.ratelimit",
    "sergas_guard.cli.health",
    "sergas_guard.cli.backup",
    "sergas_guard.cli.demo",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sergas-guard")
def cli() -> None:
    """sergas-guard: rate limits, circuit breakers, health checks and backups for web services."""


def _register() -> None:
    for module_name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that capability is not built yet
                continue
            raise
        cli.add_command(module.command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli()
