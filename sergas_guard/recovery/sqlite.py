"""Backing up a live SQLite database: the online backup API, checked on restore.

``source`` is the path of the database file. :meth:`SQLiteBackupStrategy.stage` copies
it with SQLite's online backup API (``Connection.backup``) in one step, inside one read
transaction, so the copy is the database as of one commit, whatever other connections
or processes write meanwhile: in WAL mode they keep writing during the copy; in
rollback-journal mode they wait for it (up to their own ``busy_timeout``). A stepwise
copy would let writers in between steps, but SQLite restarts such a copy after each
foreign write, so under a steady writer it might never finish. The staged tree is one
file, ``<stem>.sqlite``, which has passed ``PRAGMA integrity_check``.

``destination`` of :meth:`SQLiteBackupStrategy.finish_restore` is the path of the
database file to create. A restore never replaces anything: it refuses a destination
that exists (a file, a directory, even a dangling symlink) or that has a ``-wal`` or
``-journal`` file beside it (SQLite would replay that stale journal into the restored
database), and a missing parent directory. The restored file must pass
``PRAGMA integrity_check``; it is copied to a temporary name beside the destination,
fsynced, given the permissions recorded with the backup (the source's), and
hard-linked onto the final name (``link`` fails if the name appeared
meanwhile, so a concurrent writer of that name is never overwritten) before the
directory is fsynced: the destination is either absent or complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from sergas_guard.errors import BackupError, ConfigurationError, IntegrityError
from sergas_guard.recovery.atomic import fsync_dir

__all__ = ["SQLiteBackupStrategy"]

_MAGIC = b"SQLite format 3\x00"
_SUFFIX = ".sqlite"
# Files SQLite keeps beside a database whose contents belong to it.
_SIDECARS = ("-wal", "-journal", "-shm")


class SQLiteBackupStrategy:
    """Consistent copies of a live SQLite database file (see the module docstring).

    ``compress``: compress the copy's chunks (zstd) in the repository. ``busy_timeout``:
    seconds to wait for a writer's lock before the copy starts (rollback-journal mode).
    Raises ConfigurationError naming the field for a non-bool ``compress`` or a negative
    or non-finite ``busy_timeout``.
    """

    kind = "sqlite"
    restores_in_place = False

    def __init__(self, compress: bool = True, *, busy_timeout: float = 30.0) -> None:
        if not isinstance(compress, bool):
            raise ConfigurationError("compress must be True or False", field="compress")
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not 0 <= busy_timeout < float("inf")
        ):
            raise ConfigurationError(
                "busy_timeout must be a finite number of seconds >= 0", field="busy_timeout"
            )
        self.compress = compress
        self.busy_timeout = float(busy_timeout)

    def __repr__(self) -> str:
        return f"SQLiteBackupStrategy(compress={self.compress}, busy_timeout={self.busy_timeout})"

    def exclude(self, relative_path: str) -> bool:
        """Nothing is excluded: the staged tree is the one copy."""
        return False

    async def stage(self, source: str, staging: Path) -> Path:
        """Copy the database at ``source`` into ``staging``; returns ``staging``.

        Raises BackupError when ``source`` is not an existing SQLite database, cannot be
        read, or its copy fails ``PRAGMA integrity_check`` (IntegrityError).
        """
        path = Path(source)
        target = staging / f"{path.stem or 'database'}{_SUFFIX}"
        await asyncio.to_thread(self._copy, path, target)
        return staging

    def _copy(self, source: Path, target: Path) -> None:
        _require_database(source, what="source")
        try:
            # mode=rw: never create an empty database where the source was expected.
            src = sqlite3.connect(f"{_uri(source)}?mode=rw", uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot open SQLite database {str(source)!r}: {exc}") from exc
        try:
            dst = sqlite3.connect(target)
            try:
                # pages=-1: the whole copy in one step, i.e. one read transaction.
                src.backup(dst, pages=-1)
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy SQLite database {str(source)!r}: {exc}") from exc
        finally:
            src.close()
        for suffix in _SIDECARS:
            # A clean close removes them; a leftover would be backed up as a stray file.
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        _check_integrity(target)
        # The copy carries the source's permissions, so the backup records them and a
        # restore gives a private database back private.
        os.chmod(target, stat.S_IMODE(source.stat().st_mode))

    async def finish_restore(self, restored: Path, destination: str) -> None:
        """Check the restored database and move it to the file path ``destination``.

        ``restored`` is the restored tree (a directory holding one ``*.sqlite`` file) or
        that file. Raises IntegrityError when the database fails
        ``PRAGMA integrity_check``, BackupError when the tree does not hold exactly one
        database or ``destination`` (or a journal beside it) exists or its directory
        does not.
        """
        await asyncio.to_thread(self._finish_restore, restored, Path(destination))

    def _finish_restore(self, restored: Path, destination: Path) -> None:
        database = _restored_database(restored)
        _check_integrity(database)
        _refuse_existing(destination)
        temp = destination.with_name(f".{destination.name}.restore-{secrets.token_hex(6)}")
        try:
            # O_EXCL: fail rather than write through a file or symlink planted at that
            # name; 0o600 until done, then the permissions the backup recorded.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with database.open("rb") as reader, open(fd, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.fchmod(writer.fileno(), stat.S_IMODE(database.stat().st_mode))
                os.fsync(writer.fileno())
            try:
                os.link(temp, destination)
            except FileExistsError:
                raise BackupError(
                    f"restore destination {str(destination)!r} appeared during the restore; "
                    "it was left untouched"
                ) from None
        except OSError as exc:
            raise BackupError(
                f"cannot write the restored database to {str(destination)!r}: {exc}"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        fsync_dir(destination.parent)


def _uri(path: Path) -> str:
    # Percent-encode what a URI would read specially (?, #, %); the path stays absolute.
    return "file:" + quote(str(path.resolve()), safe="/")


def _require_database(path: Path, *, what: str) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read the SQLite {what} {str(path)!r}: {exc}") from exc
    # An empty file is a valid (empty) database to SQLite; anything else needs the magic.
    if header and header != _MAGIC:
        raise BackupError(f"the SQLite {what} {str(path)!r} is not an SQLite database")


def _check_integrity(path: Path) -> None:
    """Raise IntegrityError unless ``PRAGMA integrity_check`` answers exactly ``ok``."""
    _require_database(path, what="copy")
    try:
        # immutable=1: a private copy; no locks, no -wal/-shm files created beside it.
        connection = sqlite3.connect(f"{_uri(path)}?immutable=1", uri=True)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise IntegrityError(f"SQLite database {path.name!r} is corrupt: {exc}") from exc
    if rows != [("ok",)]:
        problems = "; ".join(str(row[0]) for row in rows[:5])
        raise IntegrityError(f"SQLite database {path.name!r} fails integrity_check: {problems}")


def _restored_database(restored: Path) -> Path:
    if restored.is_file():
        return restored
    found = sorted(restored.glob(f"*{_SUFFIX}")) if restored.is_dir() else []
    if len(found) != 1:
        raise BackupError(
            f"the restored tree holds {len(found)} *{_SUFFIX} databases, expected exactly one"
        )
    return found[0]


def _refuse_existing(destination: Path) -> None:
    for candidate in (destination, *(Path(f"{destination}{s}") for s in _SIDECARS[:2])):
        if os.path.lexists(candidate):
            raise BackupError(
                f"restore destination {str(candidate)!r} exists; restore to a new path "
                "(an existing database is never overwritten)"
            )
    if not destination.parent.is_dir():
        raise BackupError(
            f"the directory of the restore destination {str(destination)!r} does not exist"
        )
