"""What a backup strategy is: how a kind of source becomes files to back up, and how
restored files become that source again.

The repository only ever stores a tree of files. A strategy turns its source into such
a tree (:meth:`BackupStrategy.stage`): the filesystem strategy hands over the source
directory itself; a database strategy writes a consistent dump into a private staging
directory. On restore the manager rebuilds that tree and the strategy finishes the job
(:meth:`BackupStrategy.finish_restore`): nothing for files, an integrity check and an
atomic move for SQLite, ``pg_restore`` into a database for PostgreSQL. Users register
their own strategies by implementing this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["BackupStrategy"]


@runtime_checkable
class BackupStrategy(Protocol):
    """The protocol every strategy registered with ``BackupManager`` implements."""

    #: A short name of the kind of source ("filesystem", "sqlite", "postgres"), stored
    #: in each backup's manifest.
    kind: str
    #: Compress the staged files' chunks (zstd) in the repository.
    compress: bool
    #: True when the manager restores the staged tree straight into the restore
    #: destination (a directory); False when it restores into a private temporary
    #: directory and :meth:`finish_restore` moves or loads it into the destination.
    restores_in_place: bool

    async def stage(self, source: str, staging: Path) -> Path:
        """The directory (or single file) whose contents are the backup of ``source``.

        ``staging`` is an empty private directory that the manager removes afterwards; a
        strategy that backs up ``source`` as it is returns ``Path(source)``. Raises
        BackupError when the source cannot be read consistently; messages carry no secret.
        """
        ...

    def exclude(self, relative_path: str) -> bool:
        """True when the file or directory at ``relative_path`` (POSIX, relative to the
        staged root) is left out of the backup."""
        ...

    async def finish_restore(self, restored: Path, destination: str) -> None:
        """Turn the restored tree at ``restored`` into the source at ``destination``.

        Called after every file is restored and verified; for ``restores_in_place``
        strategies ``restored`` is the destination itself. Raises BackupError when the
        result fails its check (e.g. SQLite's ``PRAGMA integrity_check``).
        """
        ...
