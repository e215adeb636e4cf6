"""Backups: a crash-safe, deduplicating, encrypted repository, and the manager over it.

:class:`BackupManager` creates, lists, restores, verifies and cleans up backups made by
registered strategies (:class:`FileSystemBackupStrategy`, :class:`SQLiteBackupStrategy`,
:class:`PostgresBackupStrategy` or one of your own implementing :class:`BackupStrategy`); see
:mod:`sergas_guard.recovery.manager` for the seed's usage.
"""

from __future__ import annotations

from sergas_guard.recovery.filesystem import FileSystemBackupStrategy
from sergas_guard.recovery.manager import BackupManager, CleanupReport
from sergas_guard.recovery.postgres import PostgresBackupStrategy
from sergas_guard.recovery.retention import RetentionPolicy
from sergas_guard.recovery.sqlite import SQLiteBackupStrategy
from sergas_guard.recovery.strategy import BackupStrategy
from sergas_guard.recovery.types import (
    BackupMetadata,
    BackupProgress,
    BackupStatus,
    BackupType,
)

__all__ = [
    "BackupManager",
    "BackupMetadata",
    "BackupProgress",
    "BackupStatus",
    "BackupStrategy",
    "BackupType",
    "CleanupReport",
    "FileSystemBackupStrategy",
    "PostgresBackupStrategy",
    "RetentionPolicy",
    "SQLiteBackupStrategy",
]
