"""The ``sergas-guard`` command line.

Each capability adds its subcommands in a module of its own (``ratelimit.py``,
``health.py``, ...) registered in :func:`_register`; this module only builds the group.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["cli", "main"]

# Modules that each expose a click command or group named ``command``, with the name
# of that command and the optional extra (``pip install 'sergas-guard[extra]'``) whose
# packages it imports, if any.
_SUBCOMMAND_MODULES = (
    ("sergas_guard.cli.ratelimit", "ratelimit", None),
    ("sergas_guard.cli.health", "health", None),
    ("sergas_guard.cli.backup", "backup", "backup"),
    ("sergas_guard.cli.demo", "demo", None),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sergas-guard")
def cli() -> None:
    """sergas-guard: rate limits, circuit breakers, health checks and backups for web services."""


def _register() -> None:
    for module_name, name, extra in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that capability is not built yet
                continue
            missing = (exc.name or "?").partition(".")[0]
            if extra is None or missing.startswith("sergas_guard"):
                raise
            # An optional extra is not installed: the other commands must still work
            # (the README's demo installs the package without extras).
            cli.add_command(_needs_extra(name, extra, missing))
            continue
        cli.add_command(module.command)


def _needs_extra(name: str, extra: str, missing: str) -> click.Command:
    """A stand-in for command ``name`` that says which extra to install (exit 3)."""

    @click.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        help=f"(needs: pip install 'sergas-guard[{extra}]')",
    )
    def unavailable() -> None:
        click.echo(
            f"sergas-guard {name} needs the optional package {missing!r}: "
            f"pip install 'sergas-guard[{extra}]'",
            err=True,
        )
        raise SystemExit(3)

    return unavailable


_register()


def main() -> None:
    """Console-script entry point."""
    cli()
