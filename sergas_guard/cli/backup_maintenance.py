"""``sergas-guard backup verify``, ``cleanup`` and ``key``: looking after a repository.

Registered in the ``backup`` group by :mod:`sergas_guard.cli.backup`; exit codes as
documented there.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
from rich.filesize import decimal
from rich.table import Table

from sergas_guard.cli import backup_support as support
from sergas_guard.cli.backup_support import (
    EXIT_CONFIG,
    EXIT_FAILED,
    Session,
    common_options,
    passphrase_source,
)
from sergas_guard.errors import BackupError
from sergas_guard.recovery.retention import RetentionPolicy

__all__ = ["cleanup", "key", "verify"]

_DURATION = re.compile(r"(\d+)([ymwdh])")
_DURATION_UNITS = {"y": 365 * 24, "m": 30 * 24, "w": 7 * 24, "d": 24, "h": 1}


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


@click.command()
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
    with session.errors(), support.err_console().status("verifying"):
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


@click.command()
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
    manager = support.manager(session, session.open_repository())
    with (
        session.errors(),
        session.stop_at_once_on_interrupt(),
        support.err_console().status("cleaning up" if confirm else "deciding"),
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
    support.out_console().print(table)
    doomed = [d.backup_id for d in report.decisions if not d.keep]
    if report.dry_run:
        note = f"{len(doomed)} would be removed" + ("; run with --confirm" if doomed else "")
        click.echo(note)
    else:
        freed = decimal(report.garbage.bytes_freed) if report.garbage else decimal(0)
        click.echo(f"removed {len(report.removed)} backups, freed {freed}")


# -- key ---------------------------------------------------------------------------


@click.command()
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
