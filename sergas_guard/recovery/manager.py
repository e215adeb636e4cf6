"""The backup manager: the seed's API over one repository directory.

::

    manager = BackupManager(Path("/var/backups"))
    manager.register_strategy("filesystem", FileSystemBackupStrategy(compress=True))
    metadata = await manager.create_backup(name="daily_backup", source="/data/application",
                                           backup_type=BackupType.FULL, strategy="filesystem",
                                           retention_days=30)
    backups = manager.list_backups(backup_type=BackupType.FULL)
    success = await manager.restore_backup(backup_id=metadata.backup_id,
                                           restore_path="/data/restore")

The repository is created at the first backup (encrypted when a passphrase is given).
A backup holds a shared repository lock from choosing its parent until its manifest is
written, so concurrent backups are safe and garbage collection (exclusive) never
collects the chunks of a backup in progress. Backups of one strategy and source form
chains; :func:`choose_parent` says which earlier backup each type builds on. The
blocking file and repository work runs in a worker thread, never on the event loop.

A restore is a pipeline: ``read_ahead`` decodes the chunks of the manifest's entries
ahead, in order, on a thread pool within a byte budget, while ``restore_target`` writes
the files on writer threads and publishes them in batches (fsynced, then renamed) on a
publishing thread; each bounds its memory, and a file whose chunk or hash check fails
is never published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sergas_guard.errors import (
    BackupError,
    BackupNotFoundError,
    ConfigurationError,
    IntegrityError,
)
from sergas_guard.recovery.file_meta import FileMeta, MetaApplier
from sergas_guard.recovery.filesystem import FileSystemBackupStrategy, TreeStats, walk_entries
from sergas_guard.recovery.maintenance import clear_verified, read_verified
from sergas_guard.recovery.manifest import (
    Entry,
    Manifest,
    StoredEntries,
    metadata_of,
    parse_header,
)
from sergas_guard.recovery.read_ahead import ReadAhead
from sergas_guard.recovery.repository import GcReport, Repository, VerifyReport
from sergas_guard.recovery.restore_target import RestoreTarget
from sergas_guard.recovery.retention import Candidate, Decision, RetentionPolicy, select
from sergas_guard.recovery.strategy import BackupStrategy
from sergas_guard.recovery.types import BackupMetadata, BackupProgress, BackupType
from sergas_guard.secrets import scrub

__all__ = ["BackupManager", "CleanupReport", "choose_parent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What :meth:`BackupManager.cleanup` decided and did."""

    #: One decision per backup, oldest first, each with its reasons.
    decisions: tuple[Decision, ...]
    #: The backups removed (empty on a dry run).
    removed: tuple[str, ...]
    dry_run: bool
    #: What garbage collection freed (None on a dry run or when nothing was removed).
    garbage: GcReport | None = None


def choose_parent(
    earlier: Sequence[Manifest], backup_type: BackupType, strategy: str, source: str
) -> tuple[BackupType, Manifest | None, Manifest | None]:
    """``(type, parent, base)`` for a new backup after the backups ``earlier``.

    ``parent`` is the backup it depends on (recorded, and kept alive by retention);
    ``base`` is the backup whose unchanged files it re-uses. Only backups of the same
    strategy and source count. FULL has neither; DIFFERENTIAL builds on the newest FULL,
    INCREMENTAL on the newest backup of the chain; SNAPSHOT depends on nothing but
    re-uses the newest backup's files. A DIFFERENTIAL or INCREMENTAL with nothing to
    build on becomes a FULL, as pgBackRest does.
    """
    same = [m for m in earlier if m.strategy == strategy and m.source == source]
    same.sort(key=lambda m: (m.created_at, m.backup_id))
    newest = same[-1] if same else None
    if backup_type is BackupType.SNAPSHOT:
        return backup_type, None, newest
    if backup_type is BackupType.DIFFERENTIAL:
        fulls = [m for m in same if m.type is BackupType.FULL]
        if fulls:
            return backup_type, fulls[-1], fulls[-1]
        return BackupType.FULL, None, None
    if backup_type is BackupType.INCREMENTAL:
        chained = [m for m in same if m.type is not BackupType.SNAPSHOT]
        if chained:
            return backup_type, chained[-1], chained[-1]
        return BackupType.FULL, None, None
    return BackupType.FULL, None, None


class BackupManager:
    """Create, list, restore, verify and clean up backups in the repository at
    ``backup_dir``.

    ``passphrase`` (a callable returning it, e.g. reading an environment variable or a
    file) encrypts a new repository and opens an encrypted one; None means unencrypted.
    A ``"filesystem"`` strategy is registered from the start. Raises ConfigurationError
    for a bad argument.
    """

    def __init__(
        self,
        backup_dir: Path | str,
        *,
        passphrase: Callable[[], str] | None = None,
        compression_level: int = 3,
    ) -> None:
        if not isinstance(backup_dir, (str, Path)) or not str(backup_dir):
            raise ConfigurationError("backup_dir must be a path", field="backup_dir")
        if passphrase is not None and not callable(passphrase):
            raise ConfigurationError(
                "passphrase must be a callable returning it, or None", field="passphrase"
            )
        if (
            not isinstance(compression_level, int)
            or isinstance(compression_level, bool)
            or not 1 <= compression_level <= 22
        ):
            raise ConfigurationError(
                "compression_level must be an integer from 1 to 22", field="compression_level"
            )
        self.backup_dir = Path(backup_dir)
        self._passphrase = passphrase
        self._compression_level = compression_level
        self._strategies: dict[str, BackupStrategy] = {"filesystem": FileSystemBackupStrategy()}
        self._repository: Repository | None = None
        # Parsed manifests are immutable, so their headers are cached (their entries are
        # never in memory: StoredEntries reads them from the repository when iterated).
        self._headers: dict[str, Manifest] = {}
        # Backups whose manifest could not be read at the last listing: id → why.
        self._unreadable: dict[str, str] = {}
        # Guards the repository handle and the header cache. The Repository object is
        # thread-safe (one ChunkWriter per backup), so backups, restores and checks of
        # one manager run concurrently; other processes coordinate through the
        # repository's file locks.
        self._mutex = threading.Lock()

    @classmethod
    def for_repository(cls, repository: Repository) -> BackupManager:
        """A manager of ``repository``, already opened (so its key is not unlocked
        again: a passphrase costs a deliberately slow key derivation each time)."""
        manager = cls(repository.path)
        manager._repository = repository
        return manager

    def __repr__(self) -> str:
        return f"BackupManager({str(self.backup_dir)!r})"

    def register_strategy(self, name: str, strategy: BackupStrategy) -> None:
        """Make ``strategy`` usable as ``strategy=name`` (replacing one of that name).

        Raises ConfigurationError when ``name`` is empty or ``strategy`` does not
        implement the BackupStrategy protocol.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("strategy name must be a non-empty string", field="name")
        if not isinstance(strategy, BackupStrategy):
            raise ConfigurationError(
                f"{type(strategy).__name__} does not implement BackupStrategy", field="strategy"
            )
        self._strategies[name] = strategy

    # -- backup --------------------------------------------------------------------

    async def create_backup(
        self,
        name: str,
        source: str | Path,
        backup_type: BackupType | str = BackupType.FULL,
        strategy: str = "filesystem",
        retention_days: int | None = 30,
        *,
        progress: Callable[[BackupProgress], None] | None = None,
    ) -> BackupMetadata:
        """Back up ``source`` with the strategy registered as ``strategy``; ``progress``
        is called after each file (from a worker thread).

        Raises ConfigurationError for a bad argument or an unknown strategy, BackupError
        when the source cannot be read or the repository cannot be written (an
        interrupted backup leaves the repository valid, and its written chunks are
        re-used by the next one).
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("backup name must be a non-empty string", field="name")
        try:
            kind = BackupType(backup_type)
        except ValueError:
            raise ConfigurationError(
                f"backup_type must be one of {[t.value for t in BackupType]}",
                field="backup_type",
            ) from None
        if retention_days is not None and (
            not isinstance(retention_days, int)
            or isinstance(retention_days, bool)
            or retention_days < 0
        ):
            raise ConfigurationError(
                "retention_days must be a non-negative integer or None", field="retention_days"
            )
        chosen = self._strategies.get(strategy)
        if chosen is None:
            raise ConfigurationError(f"no strategy registered as {strategy!r}", field="strategy")
        created_at = datetime.now(UTC)
        backup_id = f"backup_{created_at:%Y%m%d_%H%M%S}_{os.urandom(4).hex()}"
        header = Manifest(
            backup_id=backup_id,
            name=name,
            type=kind,
            strategy=strategy,
            kind=chosen.kind,
            # A DSN source may hold a password; the manifest and every report show it scrubbed.
            source=scrub(str(source)),
            parent_id=None,
            chain_root_id=backup_id,
            created_at=created_at,
            completed_at=created_at,
            retention_days=retention_days,
        )
        async with _scratch_directory("sergas-stage-") as staging:
            staged = await chosen.stage(str(source), staging)
            manifest = await asyncio.to_thread(
                self._write_backup, header, chosen, staged, _Counter(progress)
            )
        logger.info(
            "backup %s (%s) of %s: %d files, %d bytes, %d new",
            backup_id,
            manifest.type.value,
            manifest.source,
            manifest.stats.get("file_count", 0),
            manifest.stats.get("size_bytes", 0),
            manifest.stats.get("stored_bytes", 0),
        )
        return metadata_of(manifest)

    def _write_backup(
        self, header: Manifest, strategy: BackupStrategy, staged: Path, counter: _Counter
    ) -> Manifest:
        repo = self._open(create=True)
        with repo.lock(exclusive=False):
            kind, parent, base = choose_parent(
                self._read_headers(repo), header.type, header.strategy, header.source
            )
            # The base's entries are read lazily, merged with the walk.
            base_manifest = self._read(repo, base.backup_id) if base is not None else None
            stats = TreeStats()
            with repo.manifest_writer(header.backup_id) as out:
                with repo.writer() as writer:
                    # Packs no index names were written by a backup that was killed (or
                    # by one running now); their chunks are re-used, so say so.
                    resumed = len(repo.orphan_packs)
                    if resumed:
                        logger.warning(
                            "backup %s re-uses %d packs of an interrupted (or concurrent) backup",
                            header.backup_id,
                            resumed,
                        )
                    for entry in walk_entries(
                        staged,
                        source=repo,
                        sink=writer,
                        parent=base_manifest,
                        stats=stats,
                        exclude=strategy.exclude,
                        one_file_system=getattr(strategy, "one_file_system", False) is True,
                        compress=strategy.compress,
                        on_file=counter.done,
                    ):
                        out.add(entry.to_dict())
                manifest = replace(
                    header,
                    type=kind,
                    parent_id=parent.backup_id if parent is not None else None,
                    chain_root_id=parent.chain_root_id if parent is not None else header.backup_id,
                    completed_at=datetime.now(UTC),
                    stats={
                        **stats.as_dict(),
                        "stored_bytes": writer.new_bytes,
                        "resumed_packs": resumed,
                    },
                )
                # The manifest goes last (the writer flushed the chunks on leaving its
                # block): its presence is what makes the backup exist.
                out.commit(manifest.header_dict())
            manifest = replace(
                manifest, entries=_stored_entries(repo, header.backup_id, out.entry_count)
            )
            with self._mutex:
                self._headers[manifest.backup_id] = manifest
        return manifest

    # -- list ----------------------------------------------------------------------

    def list_backups(self, backup_type: BackupType | str | None = None) -> list[BackupMetadata]:
        """The complete backups in the repository, oldest first (only those of
        ``backup_type`` when given); empty when there is no repository yet.

        A backup whose manifest cannot be read is left out with a logged warning and
        listed by :meth:`unreadable_backups` (restoring it raises IntegrityError).
        Raises BackupError for a wrong passphrase.
        """
        wanted = None if backup_type is None else BackupType(backup_type)
        if self._repository is None and not Repository.is_repository(self.backup_dir):
            return []
        repo = self._open(create=False)
        return [
            metadata_of(m, verified_at=self._verified_at(repo, m.backup_id))
            for m in self._read_headers(repo)
            if wanted is None or m.type is wanted
        ]

    @staticmethod
    def _verified_at(repo: Repository, backup_id: str) -> datetime | None:
        record = read_verified(repo, backup_id)
        return None if record is None else record.verified_at

    def backup_at(self, moment: datetime) -> BackupMetadata:
        """The newest complete backup created at or before ``moment`` (point in time).

        Raises ConfigurationError for a naive ``moment``, BackupNotFoundError when no
        backup is that old.
        """
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise ConfigurationError("the moment must be a timezone-aware datetime", field="at")
        older = [b for b in self.list_backups() if b.created_at <= moment]
        if not older:
            raise BackupNotFoundError(f"no backup was made at or before {moment.isoformat()}")
        return older[-1]

    def unreadable_backups(self) -> dict[str, str]:
        """The backups whose manifest could not be read when the backups were last
        listed (by :meth:`list_backups`, a backup or a cleanup): id → what is wrong."""
        with self._mutex:
            return dict(self._unreadable)

    def _read_headers(self, repo: Repository) -> list[Manifest]:
        """The readable manifests (headers only), oldest first; the unreadable ones
        are remembered for :meth:`unreadable_backups`, each warned about once."""
        ids = repo.manifest_ids()
        with self._mutex:
            for stale in set(self._headers) - set(ids):
                del self._headers[stale]
            unreadable: dict[str, str] = {}
            for backup_id in ids:
                if backup_id in self._headers:
                    continue
                try:
                    self._headers[backup_id] = self._read(repo, backup_id)
                except BackupNotFoundError:
                    continue  # removed since it was listed
                except IntegrityError as exc:
                    unreadable[backup_id] = str(exc)
                    if backup_id not in self._unreadable:
                        logger.warning("backup %s is unreadable and not listed: %s", backup_id, exc)
            self._unreadable = unreadable
            return sorted(self._headers.values(), key=lambda m: (m.created_at, m.backup_id))

    @staticmethod
    def _read(repo: Repository, backup_id: str) -> Manifest:
        """The manifest of ``backup_id``: its header read now, its entries read each time
        they are iterated."""
        header = repo.read_manifest_header(backup_id)
        entries = _stored_entries(repo, backup_id, header.entry_count)
        return parse_header(header.document, backup_id=backup_id, entries=entries)

    # -- restore -------------------------------------------------------------------

    async def restore_backup(
        self,
        backup_id: str | None = None,
        restore_path: str | Path | None = None,
        *,
        at: datetime | None = None,
        overwrite: bool = False,
        progress: Callable[[BackupProgress], None] | None = None,
        owners: bool | None = None,
    ) -> bool:
        """Restore the backup ``backup_id`` (or the newest one at or before ``at``) to
        ``restore_path``, exactly as its source was; True once done and checked.

        Files are checked against their recorded SHA-256 while written; nothing
        half-written is left under a final name. Raises ConfigurationError for bad
        arguments, BackupNotFoundError for an unknown backup, IntegrityError for
        corrupt data, UnsafeRestoreError for a manifest entry that would escape the
        target, BackupError when the target is not empty (without ``overwrite``) or the
        strategy's final step fails. ``progress`` is called after each file (from a
        worker thread). ``owners`` sets the recorded uid/gid (default: only when running
        as root; asking for it elsewhere fails unless the ids are the caller's own);
        ``user.*`` extended attributes are restored always, the others as root.
        """
        if restore_path is None or not str(restore_path):
            raise ConfigurationError("restore_path is required", field="restore_path")
        if (backup_id is None) == (at is None):
            raise ConfigurationError("give either backup_id or at", field="backup_id")
        if backup_id is None:
            assert at is not None
            backup_id = self.backup_at(at).backup_id
        manifest = await asyncio.to_thread(self._load, backup_id)
        strategy = self._strategies.get(manifest.strategy)
        if strategy is None:
            raise BackupError(
                f"backup {backup_id!r} was made with strategy {manifest.strategy!r},"
                " which is not registered"
            )
        counter = _Counter(progress)
        privileged = os.geteuid() == 0
        applier = MetaApplier(
            owners=privileged if owners is None else owners, privileged=privileged
        )
        if strategy.restores_in_place:
            root = Path(restore_path)
            await asyncio.to_thread(self._restore_tree, manifest, root, overwrite, counter, applier)
            await strategy.finish_restore(root, str(restore_path))
        else:
            async with _scratch_directory("sergas-restore-") as scratch:
                root = scratch / "tree"
                await asyncio.to_thread(self._restore_tree, manifest, root, False, counter, applier)
                await strategy.finish_restore(root, str(restore_path))
        logger.info("restored backup %s (%d entries)", backup_id, len(manifest.entries))
        return True

    def _load(self, backup_id: str) -> Manifest:
        return self._read(self._open(create=False), backup_id)

    def _restore_tree(
        self,
        manifest: Manifest,
        root: Path,
        overwrite: bool,
        counter: _Counter,
        applier: MetaApplier | None = None,
    ) -> None:
        """Write the tree of ``manifest`` under ``root``: chunks are decoded ahead on a
        thread pool (``read_ahead``) while the target writes and publishes the files
        (``restore_target``); both bound their memory, and a file whose content fails
        a check is never published."""
        repo = self._open(create=False)
        # Shared: a concurrent garbage collection must not remove chunks being read.
        with (
            repo.lock(exclusive=False),
            RestoreTarget(root, overwrite=overwrite, meta=applier) as target,
            ReadAhead(repo, manifest.backup_id) as ahead,
        ):
            for entry, content in ahead.entries(manifest.entries):
                meta = FileMeta(entry.uid, entry.gid, entry.xattrs)
                if entry.type == "dir":
                    target.directory(
                        entry.path, mode=entry.mode, mtime_ns=entry.mtime_ns, meta=meta
                    )
                elif entry.type == "symlink":
                    assert entry.target is not None
                    target.symlink(entry.path, entry.target, mtime_ns=entry.mtime_ns, meta=meta)
                elif entry.type == "hardlink":
                    assert entry.target is not None
                    target.hardlink(entry.path, entry.target)
                else:
                    target.file(
                        entry.path,
                        content,
                        mode=entry.mode,
                        mtime_ns=entry.mtime_ns,
                        meta=meta,
                    )
                    counter.done(entry)
            target.finish()

    # -- verify and cleanup ----------------------------------------------------------

    async def verify(self, *, read_data_fraction: float = 0.0) -> VerifyReport:
        """Check the repository: every manifest's chunks exist and the indexes agree;
        with ``read_data_fraction`` > 0 that share of the data is also decrypted and
        hashed. Each backup found sound is recorded as verified (its
        ``verified_at``, and what retention trusts as "the newest verified backup");
        each found damaged loses that mark. Raises BackupNotFoundError when there is no
        repository.
        """
        return await asyncio.to_thread(self._verify, read_data_fraction)

    def _verify(self, read_data_fraction: float) -> VerifyReport:
        return self._open(create=False).verify(read_data_fraction=read_data_fraction)

    async def cleanup(
        self,
        policy: RetentionPolicy | None = None,
        *,
        confirm: bool = False,
        now: datetime | None = None,
    ) -> CleanupReport:
        """Apply ``policy`` (default: each backup's ``retention_days``) to the backups.

        A dry run (the default) only reports each decision and why; with ``confirm``
        the backups not kept are removed and unreferenced chunks garbage-collected. A
        parent that a kept backup builds on is always kept. Raises BackupNotFoundError
        when there is no repository, ConfigurationError for a naive ``now``,
        IntegrityError (removing nothing) when confirmed while a backup's manifest is
        unreadable (a dry run still decides over the readable ones).
        """
        moment = datetime.now(UTC) if now is None else now
        return await asyncio.to_thread(self._cleanup, policy or RetentionPolicy(), confirm, moment)

    def _cleanup(self, policy: RetentionPolicy, confirm: bool, now: datetime) -> CleanupReport:
        repo = self._open(create=False)
        candidates = [
            Candidate(
                backup_id=m.backup_id,
                created_at=m.created_at,
                backup_type=m.type.value,
                parent_id=m.parent_id,
                # Only a backup a verification found sound counts: retention never
                # removes the newest of those.
                verified=read_verified(repo, m.backup_id) is not None,
                retention_days=m.retention_days,
            )
            for m in self._read_headers(repo)
        ]
        decisions = tuple(select(candidates, policy, now))
        doomed = tuple(d.backup_id for d in decisions if not d.keep)
        unreadable = self.unreadable_backups()
        if confirm and doomed and unreadable:
            # An unreadable backup may build on one the policy would remove, and
            # garbage collection cannot tell which chunks it needs: remove nothing.
            raise IntegrityError(
                "cleanup stopped, nothing removed: unreadable backups "
                + ", ".join(sorted(unreadable))
            )
        if not confirm or not doomed:
            return CleanupReport(decisions, (), dry_run=not confirm)
        for backup_id in doomed:
            # The mark goes first: a kill in between leaves an unmarked backup, never a
            # mark that outlives its backup.
            clear_verified(repo, backup_id)
            repo.delete_manifest(backup_id)
            with self._mutex:
                self._headers.pop(backup_id, None)
            logger.info("removed backup %s", backup_id)
        garbage = repo.collect_garbage()
        return CleanupReport(decisions, doomed, dry_run=False, garbage=garbage)

    # -- the repository ------------------------------------------------------------

    def _open(self, *, create: bool) -> Repository:
        with self._mutex:
            return self._open_locked(create=create)

    def _open_locked(self, *, create: bool) -> Repository:
        if self._repository is None:
            if Repository.is_repository(self.backup_dir):
                self._repository = Repository.open(self.backup_dir, passphrase=self._passphrase)
            elif create:
                self._repository = Repository.init(
                    self.backup_dir,
                    passphrase=self._passphrase,
                    compression_level=self._compression_level,
                )
            else:
                raise BackupNotFoundError(f"no backup repository at {str(self.backup_dir)!r}")
        return self._repository


class _Counter:
    """Adds up finished files and tells the caller's progress callback."""

    def __init__(self, progress: Callable[[BackupProgress], None] | None) -> None:
        self._progress = progress
        self.files = 0
        self.bytes = 0

    def done(self, entry: Entry) -> None:
        self.files += 1
        self.bytes += entry.size
        if self._progress is not None:
            self._progress(BackupProgress(self.files, self.bytes, entry.path))


def _stored_entries(repo: Repository, backup_id: str, count: int) -> StoredEntries:
    return StoredEntries(lambda: repo.manifest_entries(backup_id), count, backup_id)


@contextlib.asynccontextmanager
async def _scratch_directory(prefix: str) -> AsyncIterator[Path]:
    """A private temporary directory, created and removed off the event loop (a database
    dump in it may be large)."""
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=prefix))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)
