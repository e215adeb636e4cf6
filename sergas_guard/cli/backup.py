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
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from sergas_guard.cli.backup_progress import (
    BackupProgress,
    ProgressStrategy,
    progress_bar,
    watch_tree,
)
from sergas_guard.cli.backup_support import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    Session,
    common_options,
    metadata_json,
    passphrase_source,
)
from sergas_guard.errors import BackupError, BackupNotFoundError
from sergas_guard.recovery.filesystem import FileSystemBackupStrategy
from sergas_guard.recovery.manager import BackupManager
from sergas_guard.recovery.repository import Repository
from sergas_guard.recovery.retention import RetentionPolicy
from sergas_guard.recovery.strategy import BackupStrategy
from sergas_guard.recovery.types import BackupMetadata, BackupType
from sergas_guard.secrets import scrub_url, url_secrets

__all__ = ["command"]

TYPES = [t.value for t in BackupType]
STRATEGIES = ["filesystem", "sqlite", "postgres"]
#: The seed's BACKUP_CONFIG["retention_days"].
DEFAULT_RETENTION_DAYS = 30
_DURATION = re.compile(r"(\d+)([ymwdh])")
_DURATION_UNITS = {"y": 365 * 24, "m": 30 * 24, "w": 7 * 24, "d": 24, "h": 1}


@click.group(name="backup")
def command() -> None:
    """Encrypted, deduplicated backups: create, list, restore, verify, clean up.

    \b
    Repository: --repo PATH or $SERGAS_GUARD_BACKUP_DIR.
    Passphrase: --passphrase-file, --passphrase-env VAR or $SERGAS_GUARD_BACKUP_PASSPHRASE.
    Exit codes: 0 ok, 1 failed, 2 usage, 3 configuration, 4 not found,
    5 not available yet, 130 interrupted.
    """


def _err_console() -> Console:
    return Console(stderr=True)


def _out_console() -> Console:
    console = Console()
    # Piped into a file or another program, a table squeezed to 80 columns is unreadable.
    return console if console.is_terminal else Console(width=200)


def _manager(session: Session) -> BackupManager:
    with session.errors():
        return BackupManager(session.repo, passphrase=session.passphrase)


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
    if Repository.is_repository(session.repo):
        session.open_repository()  # a wrong passphrase fails here, before any work
    elif session.passphrase is None:
        session.fail(
            EXIT_CONFIG,
            f"no backup repository at {session.repo} and no passphrase to create an encrypted"
            " one: set $SERGAS_GUARD_BACKUP_PASSPHRASE (or --passphrase-file/-env), or run"
            " `sergas-guard backup init --no-encryption` first",
        )
    manager = _manager(session)
    console = _err_console()
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
        )
    return table


@click.command(name="list")
@click.option("--type", "backup_type", type=click.Choice(TYPES, case_sensitive=False))
@common_options
def list_(session: Session, backup_type: str | None) -> None:
    """List the complete backups, oldest first."""
    session.open_repository()
    manager = _manager(session)
    with session.errors():
        backups = manager.list_backups(backup_type=backup_type.lower() if backup_type else None)
    if session.as_json:
        session.emit(
            {"repository": str(session.repo), "backups": [metadata_json(b) for b in backups]}
        )
    else:
        _out_console().print(_list_table(backups))


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
@common_options
def restore(
    session: Session,
    backup_id: str | None,
    at: str | None,
    destination: str,
    overwrite: bool,
) -> None:
    """Restore one backup exactly as its source was."""
    if (backup_id is None) == (at is None):
        raise click.UsageError("give --backup-id or --at (one of them)")
    session.secrets.extend(url_secrets(destination))  # a DSN destination may carry a password
    session.open_repository()
    manager = _manager(session)
    console = _err_console()
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
            backup_id=metadata.backup_id, restore_path=destination, overwrite=overwrite
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


# -- verify ------------------------------------------------------------------------


def _fraction(read_data: bool, subset: str | None) -> float:
    if read_data and subset:
        raise click.UsageError("give --read-data or --read-data-subset, not both")
    if read_data:
        return 1.0
    if not subset:
        return 0.0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", subset)
    value = float(match.group(1)) if match else -1.0
    if not 0 < value <= 100:
        raise click.BadParameter(
            f"{subset!r} is not a percentage above 0 and at most 100 (e.g. 10%)",
            param_hint="--read-data-subset",
        )
    return value / 100


@command.command()
@click.option("--read-data", is_flag=True, help="Also decrypt and hash every chunk.")
@click.option(
    "--read-data-subset", metavar="N%", help="Also decrypt and hash this share of the packs."
)
@common_options
def verify(session: Session, read_data: bool, read_data_subset: str | None) -> None:
    """Check the repository's structure (and with --read-data its data).

    Exit code 1 when a problem is found; each names the backups and files it affects.
    """
    fraction = _fraction(read_data, read_data_subset)
    repo = session.open_repository()
    with session.errors(), _err_console().status("verifying"):
        report = repo.verify(read_data_fraction=fraction)
    if session.as_json:
        session.emit(
            {
                "ok": report.ok,
                "problems": list(report.problems),
                "packs_checked": report.packs_checked,
                "packs_read": report.packs_read,
                "chunks_read": report.chunks_read,
                "damaged_chunks": sorted(report.damaged_chunks),
                "affected": {k: list(v) for k, v in sorted(report.affected.items())},
            }
        )
    else:
        state = "no problems" if report.ok else f"{len(report.problems)} problems"
        click.echo(
            f"checked {report.packs_checked} packs, read {report.packs_read}"
            f" ({report.chunks_read} chunks): {state}"
        )
        for problem in report.problems:
            click.echo(f"  problem: {problem}")
        for affected_id, paths in sorted(report.affected.items()):
            click.echo(f"  backup {affected_id} affected: {', '.join(paths)}")
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


# -- cleanup -----------------------------------------------------------------------


def _duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(
            f"{text!r} is not a duration like 30d, 2w, 1y6m, 12h (y=365d, m=30d)",
            param_hint="--keep-within",
        )
    return timedelta(hours=sum(int(n) * _DURATION_UNITS[u] for n, u in parts))


_PERIODS = {"hourly": "hours", "daily": "days", "weekly": "weeks", "monthly": "months"}


def _keep_option(rule: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    period = _PERIODS.get(rule, "years")
    return click.option(
        f"--keep-{rule}",
        type=click.IntRange(min=0),
        metavar="N",
        help="Keep the N newest backups."
        if rule == "last"
        else f"Keep the newest backup of each of the last N {period} that have one.",
    )


@command.command()
@_keep_option("last")
@_keep_option("hourly")
@_keep_option("daily")
@_keep_option("weekly")
@_keep_option("monthly")
@_keep_option("yearly")
@click.option(
    "--keep-within", metavar="DURATION", help="Keep backups this close to the newest (30d, 1y6m)."
)
@click.option(
    "--ignore-retention-days", is_flag=True, help="Do not keep backups for their --retention."
)
@click.option("--confirm", is_flag=True, help="Remove the backups (default: only show).")
@common_options
def cleanup(
    session: Session,
    keep_within: str | None,
    ignore_retention_days: bool,
    confirm: bool,
    **keep: int | None,
) -> None:
    """Apply the retention policy: a dry run unless --confirm.

    Each backup's own retention days count unless --ignore-retention-days; a backup
    that a kept incremental or differential builds on is always kept, and so is the
    newest one.
    """
    with session.errors():
        policy = RetentionPolicy(
            keep_within=_duration(keep_within),
            use_retention_days=not ignore_retention_days,
            **keep,
        )
    session.open_repository()
    manager = _manager(session)
    with (
        session.errors(),
        session.stop_at_once_on_interrupt(),
        _err_console().status("cleaning up" if confirm else "deciding"),
    ):
        report = asyncio.run(manager.cleanup(policy, confirm=confirm))
    if session.as_json:
        garbage: dict[str, Any] | None = None
        if report.garbage is not None:
            g = report.garbage
            garbage = {
                "chunks_removed": g.chunks_removed,
                "packs_deleted": g.packs_deleted,
                "packs_rewritten": g.packs_rewritten,
                "bytes_freed": g.bytes_freed,
            }
        session.emit(
            {
                "dry_run": report.dry_run,
                "decisions": [
                    {"backup_id": d.backup_id, "keep": d.keep, "reasons": list(d.reasons)}
                    for d in report.decisions
                ],
                "removed": list(report.removed),
                "garbage": garbage,
            }
        )
        return
    table = Table(title="cleanup (dry run)" if report.dry_run else "cleanup")
    for header in ("backup id", "decision", "why"):
        table.add_column(header, overflow="fold")
    for d in report.decisions:
        verdict = "[green]keep[/]" if d.keep else "[red]remove[/]"
        table.add_row(d.backup_id, verdict, "; ".join(d.reasons))
    _out_console().print(table)
    doomed = [d.backup_id for d in report.decisions if not d.keep]
    if report.dry_run:
        note = f"{len(doomed)} would be removed" + ("; run with --confirm" if doomed else "")
        click.echo(note)
    else:
        freed = decimal(report.garbage.bytes_freed) if report.garbage else decimal(0)
        click.echo(f"removed {len(report.removed)} backups, freed {freed}")


# -- key ---------------------------------------------------------------------------


@command.command()
@click.option("--new-passphrase-file", type=click.Path(dir_okay=False))
@click.option("--new-passphrase-env", metavar="VAR")
@common_options
def key(session: Session, new_passphrase_file: str | None, new_passphrase_env: str | None) -> None:
    """Change the repository's passphrase (the data is not re-encrypted)."""
    if not new_passphrase_file and not new_passphrase_env:
        raise click.UsageError("give --new-passphrase-file or --new-passphrase-env")
    new = passphrase_source(session, new_passphrase_file, new_passphrase_env)
    assert new is not None
    repo = session.open_repository()
    try:
        repo.change_passphrase(new)
    except BackupError as exc:
        session.fail(EXIT_CONFIG, str(exc))
    if session.as_json:
        session.emit({"repository": str(session.repo), "passphrase_changed": True})
    else:
        click.echo(f"passphrase of {session.repo} changed")


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
