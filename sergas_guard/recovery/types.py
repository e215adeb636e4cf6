"""The vocabulary of backups: their types and the metadata the manager reports.

:class:`BackupType` carries the meanings pgBackRest users know. Every backup stores the
full list of the source's entries, so any backup restores exactly on its own; the type
only decides which earlier backup is the *parent* whose unchanged files are re-used
without reading them again, and which backups a chain keeps alive in retention:

- ``FULL``: every file is read; the start of a chain.
- ``DIFFERENTIAL``: files changed since the newest FULL of the same source.
- ``INCREMENTAL``: files changed since the newest backup of the same source's chain.
- ``SNAPSHOT``: a logically full point-in-time image that starts its own chain but
  re-uses the unchanged files of the newest backup of the source (so it shares chunks).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = ["BackupMetadata", "BackupProgress", "BackupStatus", "BackupType"]


class BackupType(enum.StrEnum):
    """What a backup reads, and which earlier backup it depends on."""

    FULL = "full"
    INCREMENTAL = "incremental"
    DIFFERENTIAL = "differential"
    SNAPSHOT = "snapshot"


class BackupStatus(enum.StrEnum):
    """The state of a backup as the repository shows it."""

    #: Its manifest is on disk, so every chunk it names was written before it.
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class BackupMetadata:
    """What the manager knows about one backup (read back from its manifest)."""

    backup_id: str
    name: str
    backup_type: BackupType
    strategy: str
    source: str
    created_at: datetime
    completed_at: datetime
    parent_id: str | None
    chain_root_id: str
    retention_days: int | None
    #: Bytes of the backed-up files (the size of a restore).
    size_bytes: int
    file_count: int
    #: Bytes of new chunk data this backup added to the repository (before compression).
    stored_bytes: int
    status: BackupStatus = BackupStatus.COMPLETED
    #: When a verification last found this backup sound (None: never, or since found
    #: damaged); recorded in the repository by ``verify``.
    verified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BackupProgress:
    """How far a backup or restore has got, reported after each file (from a worker
    thread: a callback must be thread-safe and quick, e.g. a rich progress bar)."""

    #: Files done so far, and the bytes of their content.
    files: int
    bytes: int
    #: The file just done (relative POSIX path).
    path: str
