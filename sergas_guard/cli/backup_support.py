"""What every ``sergas-guard backup`` command shares: where the repository is, where
its passphrase comes from, how results are printed and how errors become exit codes.

The passphrase is never an argument value (argv is visible to every user of the
machine): it comes from a file (``--passphrase-file``), a named environment variable
(``--passphrase-env VAR``) or ``$SERGAS_GUARD_BACKUP_PASSPHRASE``, and every message
printed is scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
from rich.console import Console

from sergas_guard.errors import (
    BackupError,
    BackupNotFoundError,
    ConfigurationError,
    IntegrityError,
    UnsafeRestoreError,
)
from sergas_guard.recovery.crypto import passphrase_from_env, passphrase_from_file
from sergas_guard.recovery.manager import BackupManager
from sergas_guard.recovery.repository import Repository
from sergas_guard.recovery.types import BackupMetadata
from sergas_guard.secrets import ScrubbingFilter, scrub

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "PASSPHRASE_ENV",
    "REPO_ENV",
    "Session",
    "common_options",
    "err_console",
    "manager",
    "metadata_json",
    "out_console",
    "passphrase_source",
]

REPO_ENV = "SERGAS_GUARD_BACKUP_DIR"
PASSPHRASE_ENV = "SERGAS_GUARD_BACKUP_PASSPHRASE"

EXIT_OK = 0
#: The operation ran and failed: verify found problems, a backup or restore failed
#: (unreadable source, corrupt data, a manifest trying to escape the target, a
#: destination that is not empty).
EXIT_FAILED = 1
#: Wrong usage: an unknown option, a missing required one (click's own code).
EXIT_USAGE = 2
#: The repository cannot be used as configured: none at the path, a wrong or missing
#: passphrase, an invalid option value.
EXIT_CONFIG = 3
#: The backup asked for does not exist (unknown id, nothing at or before ``--at``).
EXIT_NOT_FOUND = 4
#: The command belongs to a later version (``test-recovery``: disaster recovery part 2).
EXIT_UNAVAILABLE = 5
#: Interrupted (Ctrl-C); the repository stays valid, a re-run re-uses what was written.
EXIT_INTERRUPTED = 130


@dataclass
class Session:
    """One command's repository path, passphrase source and output mode."""

    repo: Path
    passphrase: Callable[[], str] | None
    as_json: bool
    #: Every passphrase read so far, so that no message can print one.
    secrets: list[str] = field(default_factory=list)

    def fail(self, code: int, message: str) -> NoReturn:
        """Print ``message`` (scrubbed) on stderr, and as JSON on stdout with ``--json``,
        then exit with ``code``."""
        text = scrub(message, *self.secrets)
        click.echo(f"error: {text}", err=True)
        if self.as_json:
            click.echo(json.dumps({"error": {"exit_code": code, "message": text}}))
        raise click.exceptions.Exit(code)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn the library's errors raised inside into messages and exit codes."""
        try:
            yield
        except KeyboardInterrupt:
            self.fail(EXIT_INTERRUPTED, "interrupted; the repository is still valid")
        except ConfigurationError as exc:
            self.fail(EXIT_CONFIG, f"configuration error: {exc}")
        except BackupNotFoundError as exc:
            self.fail(EXIT_NOT_FOUND, str(exc))
        except UnsafeRestoreError as exc:
            self.fail(EXIT_FAILED, f"unsafe backup refused: {exc}")
        except IntegrityError as exc:
            self.fail(EXIT_FAILED, f"integrity error: {exc}")
        except BackupError as exc:
            self.fail(EXIT_FAILED, str(exc))

    @contextmanager
    def stop_at_once_on_interrupt(self) -> Iterator[None]:
        """While inside, Ctrl-C or SIGTERM ends the process at once with
        EXIT_INTERRUPTED.

        The work runs in a thread that cannot be cancelled, so a KeyboardInterrupt would
        only be seen after the whole backup had finished. Stopping at once is what a
        ``kill -9`` does, and the repository is built to survive exactly that: the lock
        dies with the process, complete packs are re-used by the next backup, and a
        restore leaves nothing half-written under a final name.
        """

        def stop(signum: int, frame: FrameType | None) -> None:
            message = (
                "interrupted; the repository is still valid and the next backup re-uses"
                " what was written"
            )
            sys.stderr.write(f"error: {message}\n")
            if self.as_json:
                error = {"error": {"exit_code": EXIT_INTERRUPTED, "message": message}}
                sys.stdout.write(json.dumps(error) + "\n")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def emit(self, payload: dict[str, Any]) -> None:
        """Print ``payload`` as JSON on stdout (for ``--json``)."""
        click.echo(json.dumps(payload, indent=2, default=str))

    def wrap(self, source: Callable[[], str]) -> Callable[[], str]:
        """``source``, remembering what it returns so messages are scrubbed of it."""

        def read() -> str:
            value = source()
            if value not in self.secrets:
                self.secrets.append(value)
            return value

        return read

    def open_repository(self) -> Repository:
        """The repository, opened with the passphrase; exits with EXIT_CONFIG when there
        is none at the path or the passphrase is missing or wrong."""
        if not Repository.is_repository(self.repo):
            self.fail(
                EXIT_CONFIG,
                f"no backup repository at {self.repo} (create one with `sergas-guard backup init`)",
            )
        try:
            return Repository.open(self.repo, passphrase=self.passphrase)
        except BackupError as exc:
            self.fail(EXIT_CONFIG, str(exc))


def err_console() -> Console:
    """Where progress bars and spinners go: stderr, so stdout keeps only the result."""
    return Console(stderr=True)


def out_console() -> Console:
    """Where tables go."""
    console = Console()
    # Piped into a file or another program, a table squeezed to 80 columns is unreadable.
    return console if console.is_terminal else Console(width=200)


def manager(session: Session, repository: Repository | None) -> BackupManager:
    """The manager of the session's repository: of ``repository`` when the command has
    opened it already (its key is unlocked once per command), else one that creates the
    repository at its first backup. Exits on a bad argument."""
    with session.errors():
        if repository is not None:
            return BackupManager.for_repository(repository)
        return BackupManager(session.repo, passphrase=session.passphrase)


def passphrase_source(
    session: Session, passphrase_file: str | None, passphrase_env: str | None
) -> Callable[[], str] | None:
    """The passphrase callable the options (or ``$SERGAS_GUARD_BACKUP_PASSPHRASE``)
    name, or None when none does; exits with EXIT_USAGE when both options are given."""
    if passphrase_file and passphrase_env:
        raise click.UsageError("give --passphrase-file or --passphrase-env, not both")
    if passphrase_file:
        return session.wrap(passphrase_from_file(Path(passphrase_file)))
    if passphrase_env:
        return session.wrap(passphrase_from_env(passphrase_env))
    if os.environ.get(PASSPHRASE_ENV):
        return session.wrap(passphrase_from_env(PASSPHRASE_ENV))
    return None


def _show_library_warnings() -> None:
    # The manager reports an interrupted backup whose chunks it re-uses as a warning:
    # the user should see it, scrubbed like everything else printed.
    logger = logging.getLogger("sergas_guard.recovery")
    if any(getattr(h, "_sergas_cli", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.addFilter(ScrubbingFilter())
    handler._sergas_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def common_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add ``--repo``, the passphrase options and ``--json``; the command receives a
    :class:`Session` as ``session`` instead of them."""

    @click.option(
        "--repo",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=REPO_ENV,
        required=True,
        help=f"Repository directory (default: ${REPO_ENV}).",
    )
    @click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        help=f"Read the passphrase from the first line of this file (default: ${PASSPHRASE_ENV}).",
    )
    @click.option(
        "--passphrase-env",
        metavar="VAR",
        help="Read the passphrase from this environment variable.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
    def wrapper(
        repo: Path,
        passphrase_file: str | None,
        passphrase_env: str | None,
        as_json: bool,
        **kwargs: Any,
    ) -> None:
        _show_library_warnings()
        session = Session(repo=repo, passphrase=None, as_json=as_json)
        session.passphrase = passphrase_source(session, passphrase_file, passphrase_env)
        func(session=session, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def metadata_json(metadata: BackupMetadata) -> dict[str, Any]:
    """One backup as the ``--json`` outputs show it."""
    return {
        "backup_id": metadata.backup_id,
        "name": metadata.name,
        "type": metadata.backup_type.value,
        "strategy": metadata.strategy,
        "source": metadata.source,
        "created_at": metadata.created_at.isoformat(),
        "completed_at": metadata.completed_at.isoformat(),
        "parent_id": metadata.parent_id,
        "chain_root_id": metadata.chain_root_id,
        "retention_days": metadata.retention_days,
        "size_bytes": metadata.size_bytes,
        "file_count": metadata.file_count,
        "stored_bytes": metadata.stored_bytes,
        "status": metadata.status.value,
        "verified_at": None if metadata.verified_at is None else metadata.verified_at.isoformat(),
    }
