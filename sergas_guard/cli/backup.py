"""``sergas-guard backup``: create, list, restore, verify and clean up backups.

Commands: ``init``, ``create`` (also spelled ``create-backup``), ``list`` (``list-backups``),
``restore``, ``verify``, ``cleanup``, ``key``. The repository is ``--repo PATH`` or
``$SERGAS_GUARD_BACKUP_DIR``; the passphrase comes from ``--passphrase-file``,
``--passphrase-env VAR`` or ``$SERGAS_GUARD_BACKUP_PASSPHRASE``, never from an argument.

Exit codes: 0 success; 1 the operation failed (verify found problems, a backup or restore
failed); 2 usage error; 3 configuration error (no repository, wrong or missing
passphrase, bad option value); 4 backup not found; 5 not available yet
(``test-recovery``); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.filesize import decimal
from rich.table import Table

from sergas_guard.cli import backup_support as support
from sergas_guard.cli.backup_maintenance import cleanup, key, verify
from sergas_guard.cli.backup_progress import (
    BackupProgress,
    ProgressStrategy,
    progress_bar,
    watch_tree,
)
from sergas_guard.cli.backup_support import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    Session,
    common_options,
    metadata_json,
)
from sergas_guard.errors import BackupError, BackupNotFoundError
from sergas_guard.recovery.filesystem import FileSystemBackupStrategy
from sergas_guard.recovery.repository import Repository
from sergas_guard.recovery.strategy import BackupStrategy
from sergas_guard.recovery.types import BackupMetadata, BackupType
from sergas_guard.secrets import scrub_url, url_secrets

__all__ = ["command"]

TYPES = [t.value for t in BackupType]
STRATEGIES = ["filesystem", "sqlite", "postgres"]
#: The seed's BACKUP_CONFIG["retention_days"].
DEFAULT_RETENTION_DAYS = 30


@click.group(name="backup")
def command() -> None:
    """Encrypted, deduplicated backups: create, list, restore, verify, clean up.

    \b
    Repository: --repo PATH or $SERGAS_GUARD_BACKUP_DIR.
    Passphrase: --passphrase-file, --passphrase-env VAR or $SERGAS_GUARD_BACKUP_PASSPHRASE.
    Exit codes: 0 ok, 1 failed, 2 usage, 3 configuration, 4 not found,
    5 not available yet, 130 interrupted.
    """


def _strategy(name: str, exclude: tuple[str, ...], one_file_system: bool) -> BackupStrategy:
    # Imported when asked for: the PostgreSQL strategy looks for its tools on PATH.
    if name == "sqlite":
        from sergas_guard.recovery.sqlite import SQLiteBackupStrategy

        return SQLiteBackupStrategy()
    if name == "postgres":
        from sergas_guard.recovery.postgres import PostgresBackupStrategy

        return PostgresBackupStrategy()
    return FileSystemBackupStrategy(exclude=exclude, one_file_system=one_file_system)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _rate(size: int, seconds: float) -> str:
    return f"{decimal(int(size / seconds))}/s" if seconds > 0 else "-"


# -- init ------------------------------------------------------------------------


@command.command()
@click.option(
    "--no-encryption", is_flag=True, help="Create an unencrypted repository (no passphrase)."
)
@click.option(
    "--compression-level",
    type=click.IntRange(1, 22),
    default=3,
    show_default=True,
    help="zstd level.",
)
@common_options
def init(session: Session, no_encryption: bool, compression_level: int) -> None:
    """Create an empty repository (encrypted unless --no-encryption)."""
    if no_encryption and session.passphrase is not None:
        session.fail(EXIT_CONFIG, "--no-encryption was given together with a passphrase")
    if not no_encryption and session.passphrase is None:
        session.fail(
            EXIT_CONFIG,
            "no passphrase: pass --passphrase-file or --passphrase-env, set"
            " $SERGAS_GUARD_BACKUP_PASSPHRASE, or use --no-encryption",
        )
    try:
        repo = Repository.init(
            session.repo, passphrase=session.passphrase, compression_level=compression_level
        )
    except BackupError as exc:
        # A non-empty directory or an unreadable passphrase source: fix the setup.
        session.fail(EXIT_CONFIG, str(exc))
    if session.as_json:
        session.emit(
            {
                "repository": str(session.repo),
                "encrypted": repo.encrypted,
                "compression_level": repo.compression_level,
            }
        )
    else:
        kind = "encrypted" if repo.encrypted else "unencrypted"
        click.echo(f"created {kind} repository at {session.repo}")


# -- create ----------------------------------------------------------------------


@click.command()
@click.option("--name", required=True, help="A name for the backup.")
@click.option(
    "--source",
    required=True,
    help="Directory or file (filesystem), database file (sqlite) or DSN (postgres).",
)
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(TYPES, case_sensitive=False),
    default="full",
    show_default=True,
)
@click.option(
    "--retention",
    "--retention-days",
    "retention_days",
    type=click.IntRange(min=0),
    default=DEFAULT_RETENTION_DAYS,
    show_default=True,
    help="Keep the backup at least this many days (cleanup honours it).",
)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="filesystem", show_default=True)
@click.option("--exclude", multiple=True, help="Glob to leave out (filesystem; repeatable).")
@click.option("--one-file-system", is_flag=True, help="Do not cross mount points (filesystem).")
@common_options
def create(
    session: Session,
    name: str,
    source: str,
    backup_type: str,
    retention_days: int,
    strategy: str,
    exclude: tuple[str, ...],
    one_file_system: bool,
) -> None:
    """Back up --source into the repository (created, encrypted, on first use)."""
    session.secrets.extend(url_secrets(source))  # a DSN source may carry a password
    repository = None
    if Repository.is_repository(session.repo):
        repository = session.open_repository()  # a wrong passphrase fails here, before any work
    elif session.passphrase is None:
        session.fail(
            EXIT_CONFIG,
            f"no backup repository at {session.repo} and no passphrase to create an encrypted"
            " one: set $SERGAS_GUARD_BACKUP_PASSPHRASE (or --passphrase-file/-env), or run"
            " `sergas-guard backup init --no-encryption` first",
        )
    manager = support.manager(session, repository)
    console = support.err_console()
    started = time.monotonic()
    with session.errors(), session.stop_at_once_on_interrupt():
        chosen = _strategy(strategy, exclude, one_file_system)

        def run() -> BackupMetadata:
            return asyncio.run(
                manager.create_backup(
                    name=name,
                    source=source,
                    backup_type=BackupType(backup_type.lower()),
                    strategy=strategy,
                    retention_days=retention_days,
                )
            )

        if console.is_terminal:
            with progress_bar(console) as progress:
                task = progress.add_task("backup", total=None, files=0)
                tracker = BackupProgress(progress, task)
                manager.register_strategy(strategy, ProgressStrategy(chosen, tracker))
                metadata = run()
                tracker.finish()
        else:
            manager.register_strategy(strategy, chosen)
            metadata = run()
    elapsed = time.monotonic() - started
    if session.as_json:
        session.emit(
            {
                "backup": metadata_json(metadata),
                "elapsed_seconds": round(elapsed, 3),
                "bytes_per_second": int(metadata.size_bytes / elapsed) if elapsed > 0 else None,
            }
        )
        return
    click.echo(
        f"backup {metadata.backup_id} ({metadata.backup_type.value}) of {metadata.source}:"
        f" {metadata.file_count} files, {decimal(metadata.size_bytes)},"
        f" {decimal(metadata.stored_bytes)} new, in {elapsed:.1f}s"
        f" ({_rate(metadata.size_bytes, elapsed)})"
    )
    if metadata.parent_id:
        click.echo(f"parent: {metadata.parent_id}")


def _alias(original: click.Command, name: str) -> click.Command:
    """``original`` under the seed's spelling ``name``."""
    return click.Command(
        name,
        callback=original.callback,
        params=original.params,
        help=f"Same as `{original.name}` (the spelling of the original documentation).",
    )


command.add_command(create, name="create")
command.add_command(_alias(create, "create-backup"))


# -- list ------------------------------------------------------------------------


def _list_table(backups: list[BackupMetadata]) -> Table:
    table = Table(title=f"{len(backups)} backups")
    table.add_column("backup id", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("type")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    table.add_column("new", justify="right")
    table.add_column("parent", overflow="fold")
    table.add_column("verified (UTC)", no_wrap=True)
    for b in backups:
        table.add_row(
            b.backup_id,
            b.name,
            b.backup_type.value,
            _when(b.created_at),
            b.source,
            str(b.file_count),
            decimal(b.size_bytes),
            decimal(b.stored_bytes),
            b.parent_id or "-",
            _when(b.verified_at) if b.verified_at is not None else "never",
        )
    return table


def _unreadable_table(unreadable: dict[str, str]) -> Table:
    table = Table(title=f"{len(unreadable)} unreadable backups (restore fails; run verify)")
    table.add_column("backup id", no_wrap=True, style="red")
    table.add_column("problem", overflow="fold")
    for backup_id, problem in sorted(unreadable.items()):
        table.add_row(backup_id, problem)
    return table


@click.command(name="list")
@click.option("--type", "backup_type", type=click.Choice(TYPES, case_sensitive=False))
@common_options
def list_(session: Session, backup_type: str | None) -> None:
    """List the complete backups, oldest first, with when each was last verified, and
    the backups whose manifest cannot be read (exit code 0 all the same: listing
    worked; ``verify`` fails on them)."""
    manager = support.manager(session, session.open_repository())
    with session.errors():
        backups = manager.list_backups(backup_type=backup_type.lower() if backup_type else None)
        unreadable = manager.unreadable_backups()
    if session.as_json:
        session.emit(
            {
                "repository": str(session.repo),
                "backups": [metadata_json(b) for b in backups],
                "unreadable": [
                    {"backup_id": backup_id, "problem": problem}
                    for backup_id, problem in sorted(unreadable.items())
                ],
            }
        )
    else:
        console = support.out_console()
        console.print(_list_table(backups))
        if unreadable:
            console.print(_unreadable_table(unreadable))


command.add_command(list_, name="list")
command.add_command(_alias(list_, "list-backups"))


# -- restore -----------------------------------------------------------------------


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 timestamp", param_hint="--at"
        ) from None
    # A timestamp without an offset is the local time of whoever typed it.
    return moment if moment.utcoffset() is not None else moment.astimezone()


@command.command()
@click.option("--backup-id", help="The backup to restore.")
@click.option(
    "--at", "at", metavar="TIMESTAMP", help="Restore the newest backup at or before this time."
)
@click.option(
    "--destination",
    required=True,
    help="Empty or new directory (filesystem), file (sqlite) or database (postgres).",
)
@click.option("--overwrite", is_flag=True, help="Restore into a non-empty directory.")
@click.option(
    "--owners/--no-owners",
    default=None,
    help="Set the recorded file owners (default: only when running as root).",
)
@common_options
def restore(
    session: Session,
    backup_id: str | None,
    at: str | None,
    destination: str,
    overwrite: bool,
    owners: bool | None,
) -> None:
    """Restore one backup exactly as its source was."""
    if (backup_id is None) == (at is None):
        raise click.UsageError("give --backup-id or --at (one of them)")
    session.secrets.extend(url_secrets(destination))  # a DSN destination may carry a password
    manager = support.manager(session, session.open_repository())
    console = support.err_console()
    started = time.monotonic()
    with session.errors(), session.stop_at_once_on_interrupt():
        if at is not None:
            metadata = manager.backup_at(_moment(at))
        else:
            found = [b for b in manager.list_backups() if b.backup_id == backup_id]
            if not found:
                raise BackupNotFoundError(f"no backup {backup_id!r} in {session.repo}")
            metadata = found[0]
        strategy = _strategy(metadata.strategy, (), False)
        if metadata.strategy in STRATEGIES:
            manager.register_strategy(metadata.strategy, strategy)
        run = manager.restore_backup(
            backup_id=metadata.backup_id,
            restore_path=destination,
            overwrite=overwrite,
            owners=owners,
        )
        if console.is_terminal and strategy.restores_in_place:
            with progress_bar(console) as progress:
                task = progress.add_task("restore", total=metadata.size_bytes, files=0)
                with watch_tree(progress, task, Path(destination)):
                    asyncio.run(run)
                progress.update(task, completed=metadata.size_bytes, files=metadata.file_count)
        else:
            asyncio.run(run)
    elapsed = time.monotonic() - started
    # A PostgreSQL destination is a DSN that may carry a password.
    shown = scrub_url(destination)
    if session.as_json:
        session.emit(
            {
                "restored": True,
                "backup": metadata_json(metadata),
                "destination": shown,
                "elapsed_seconds": round(elapsed, 3),
            }
        )
        return
    click.echo(
        f"restored {metadata.backup_id} to {shown}: {metadata.file_count} files,"
        f" {decimal(metadata.size_bytes)} in {elapsed:.1f}s"
        f" ({_rate(metadata.size_bytes, elapsed)})"
    )


command.add_command(verify)
command.add_command(cleanup)
command.add_command(key)


# -- part 2 ------------------------------------------------------------------------


@command.command(
    name="test-recovery",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def test_recovery(context: click.Context) -> None:
    """Recovery drills: not available yet (disaster recovery, part 2). Exit code 5."""
    message = (
        "test-recovery (recovery drills) is not available yet; it comes with disaster"
        " recovery part 2. Meanwhile: `sergas-guard backup verify --read-data` and a"
        " restore into a scratch directory."
    )
    click.echo(f"error: {message}", err=True)
    if "--json" in context.args:
        click.echo(json.dumps({"error": {"exit_code": EXIT_UNAVAILABLE, "message": message}}))
    raise click.exceptions.Exit(EXIT_UNAVAILABLE)
