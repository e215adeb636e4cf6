"""Where a restore writes: a directory that no manifest entry can escape.

A manifest is untrusted input (a corrupted or hostile repository can say anything), so
:class:`RestoreTarget` treats every entry as a claim to check, the CVE-2007-4559 lesson:

* An entry path is relative POSIX text with no empty, ``.`` or ``..`` component, no
  leading ``/`` and no NUL (:func:`split_relpath`). A backslash is an ordinary name
  character on POSIX and cannot climb out of a directory, so it is allowed: a file whose
  name holds one must stay restorable.
* The target is walked one component at a time from a file descriptor of its root with
  ``O_DIRECTORY | O_NOFOLLOW`` and ``dir_fd=``, so no symlink, whether an entry made it, it
  was there before (``overwrite=True``) or a racing process swapped it in, ever redirects a
  write.
* Symlinks are only recorded until :meth:`RestoreTarget.finish` creates them, after
  every file and directory, so nothing is ever written through one; an entry under a path
  restored as a symlink or a file is refused outright.
* Each file is written to a temporary name in its directory, fsynced, and only then
  renamed over its final name: a failure, a kill or a power loss leaves at most
  ``.sergas-restore-*.tmp`` files, never a half-written file under a name from the
  backup (ext4's rename heuristics are no guarantee: the data must be durable before
  the rename that publishes it). Renaming replaces the directory entry, so a
  pre-existing hard link to a file outside the target is detached, never written
  through.
* Writing and fsyncing files cost more than reading and decrypting them (a restore
  decodes chunks ahead on other threads, see ``read_ahead``), and an fsync per file,
  each waiting for its own journal commit, was most of it. So files are written first and
  made durable together: small files (up to 1 MiB) are handed to writer threads (one per
  core, at least four: they mostly wait for the disk) while the caller goes on, the data
  waiting for a writer bounded (16 MiB); larger files are streamed by the calling thread.
  Each file's data is sent on its way to the disk as it is written
  (``sync_file_range(2)``, every 8 MiB of a large file), so the disk works from the first
  byte. Files are published in batches (by default 256 files or 64 MiB), by one more
  thread while the caller writes the next batch: once every write of the batch is
  complete, its files are fsynced side by side (their data mostly written already, one
  journal commit serving many) and only then renamed into place in entry order. One
  batch is published at a time, in order, and the next is handed over only when the
  previous one is published, so a later entry for a name wins and at most two batches
  are unpublished; :meth:`RestoreTarget.finish` publishes the last batch and fsyncs
  every directory, and :meth:`RestoreTarget.abort` lets a batch being published finish.
  A written file's descriptor stays open until its batch is fsynced (a descriptor per
  file of two batches). (Waiting for each batch's publication before writing on cost a
  quarter of a 1 GiB restore; one ``syncfs(2)`` per batch instead of the fsyncs also
  waits for every other process's dirty data on the filesystem, such as a restore that
  just ended.)
* Sparse files stay sparse: every run of zero bytes covering whole 4 KiB blocks (aligned
  to the file offset, inside one chunk) is skipped instead of written, and the file is
  truncated to its full size at the end, so the skipped blocks read back as zeros without
  taking disk space. Only blocks whose first byte is zero are compared whole, so ordinary
  data costs one strided copy per chunk; the data between holes is still written one
  chunk at a time.
* Directory modes and times are applied last, deepest first, so a read-only directory
  from the backup does not block restoring its children and creating entries does not
  disturb the times already set.
* The target must be new or empty unless ``overwrite=True``; with it, a pre-existing
  symlink or file where the backup has a directory is removed (never followed), a
  pre-existing symlink or file is replaced by the backup's entry, and a pre-existing
  directory where the backup has a file or symlink is an error (user data is not removed
  recursively).

Set-user-ID and set-group-ID bits of files are dropped unless ``special_bits=True`` (as
Python's ``tarfile`` ``data`` filter does), so a hostile manifest cannot plant a set-uid
program when root restores. Owners and extended attributes are applied by the
``meta`` applier given (see ``file_meta``), to the open file before its mode and times,
to a directory when it is settled, to a symlink with ``follow_symlinks=False``.

Hard links are created by :meth:`RestoreTarget.finish` after every file is in place and
before the symlinks, only to a path this restore wrote as a file (never to anything
outside the target, a directory, a symlink or a device): a link is made under a
temporary name with ``linkat`` (not following symlinks) and renamed into place.

A :class:`RestoreTarget` is used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Literal

from sergas_guard.errors import BackupError, ConfigurationError, UnsafeRestoreError
from sergas_guard.recovery.atomic import start_writeback
from sergas_guard.recovery.file_meta import FileMeta, MetaApplier

__all__ = ["BATCH_BYTES", "BATCH_FILES", "TEMP_PREFIX", "RestoreTarget", "split_relpath"]

#: Names of the temporary files a restore writes before renaming them into place.
TEMP_PREFIX = ".sergas-restore-"
#: Default batch bounds: files, and bytes of file data, published together. They bound
#: the descriptors held for unpublished files and what an abort or a crash discards.
BATCH_FILES = 256
BATCH_BYTES = 64 * 1024 * 1024
# Files up to this size are written by a writer thread, and how much data may wait for one.
_SMALL_FILE = 1024 * 1024
_IN_FLIGHT_BYTES = 16 * 1024 * 1024
# Writer threads mostly wait for the disk (creating files, fsyncs): more than the cores.
_WRITERS = max(4, os.cpu_count() or 1)
# A large file is sent on its way to the disk every this many bytes while it is written.
_WRITEBACK_STEP = 8 * 1024 * 1024

# Zero runs of whole blocks of this size (aligned to the file offset) become holes.
_BLOCK = 4096
_ZERO_BLOCK = bytes(_BLOCK)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# How often a walk retries a component that changes under it before calling it a race.
_ATTEMPTS = 4

_Kind = Literal["dir", "file", "symlink"]


@dataclass
class _Pending:
    """A file written to a temporary name, waiting for its batch's fsync and rename."""

    key: int  # its entry in RestoreTarget._temps
    parent: int  # its directory, open while the entry lasts
    parts: tuple[str, ...]
    temp: str
    write: Future[int] | None  # a writer thread's job, giving ``fd``; None: written
    fd: int = -1  # the written file, open until the batch is fsynced


class _Dir:
    """A directory descriptor shared by the walk's cache and the temporary files in it,
    closed with its last user (a descriptor per file would cost a ``dup`` each: a system
    call, and a wait for the GIL after it while the decoding threads hold it)."""

    __slots__ = ("fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 1


def split_relpath(relpath: object) -> tuple[str, ...]:
    """The components of an entry path, checked to stay inside the target.

    Raises UnsafeRestoreError when ``relpath`` is not a string, is empty or absolute,
    contains NUL, or has an empty, ``.`` or ``..`` component.
    """
    if not isinstance(relpath, str):
        raise UnsafeRestoreError(f"entry path is not a string: {relpath!r}")
    if "\x00" in relpath:
        raise UnsafeRestoreError(f"entry path contains NUL: {relpath!r}")
    if relpath.startswith("/"):
        raise UnsafeRestoreError(f"entry path is absolute: {relpath!r}")
    parts = tuple(relpath.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafeRestoreError(f"entry path has a {part or 'empty'!r} component: {relpath!r}")
    return parts


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def _write_sparse(fd: int, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` from offset 0 of the new, empty file ``fd`` and return its size.

    Aligned whole blocks of zeros are left as holes (a new file reads zeros there) and the
    file is truncated to its size at the end, in case it ends in a hole. The data is sent
    on its way to the disk every few MiB and at the end (:func:`start_writeback`), so the
    ``fsync`` that makes it durable later finds little left to do. Raises OSError.
    """
    pos = 0  # file offset of the current chunk
    written = 0  # end of the last data written
    sent = 0  # data before this offset was handed to start_writeback
    for chunk in chunks:
        view = memoryview(chunk)
        size = len(view)
        start = 0  # first byte of the chunk not yet written or skipped
        first = -pos % _BLOCK  # first block boundary of the file inside the chunk
        # The first byte of every block: a block is compared whole only when it is zero,
        # so ordinary data costs one strided copy per chunk, not a Python loop per block.
        heads = view[first::_BLOCK].tobytes()
        index = heads.find(0)
        while index >= 0:
            block = first + index * _BLOCK
            if block + _BLOCK > size:
                break
            if view[block : block + _BLOCK] != _ZERO_BLOCK:
                index = heads.find(0, index + 1)
                continue
            if block > start:
                _pwrite_all(fd, view[start:block], pos + start)
                written = pos + block
            block += _BLOCK
            while block + _BLOCK <= size and view[block : block + _BLOCK] == _ZERO_BLOCK:
                block += _BLOCK
            start = block
            index = heads.find(0, (block - first) // _BLOCK)
        if start < size:
            _pwrite_all(fd, view[start:], pos + start)
            written = pos + size
        pos += size
        if pos - sent >= _WRITEBACK_STEP:
            start_writeback(fd, sent, pos - sent)
            sent = pos
    if written < pos:
        os.ftruncate(fd, pos)
    start_writeback(fd, sent)
    return pos


#: Applies owners and extended attributes to an open file (before its mode and times).
_ApplyMeta = Callable[[int], None]


def _write_temp(
    parent: int,
    temp: str,
    chunks: Iterable[bytes],
    mode: int,
    mtime_ns: int,
    apply_meta: _ApplyMeta | None = None,
) -> int:
    """Create ``temp`` in ``parent`` (never an existing name) holding ``chunks``, with
    the owners and extended attributes ``apply_meta`` sets, ``mode`` and ``mtime_ns``;
    its open descriptor, for the batch's ``fsync``.

    Removes the file and raises OSError (or BackupError from ``apply_meta``) when that
    fails (as well as an exception from ``chunks``).
    """
    fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=parent)
    try:
        _write_sparse(fd, chunks)
        if apply_meta is not None:
            apply_meta(fd)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=parent)
        raise
    return fd


def _take(chunks: Iterable[bytes], limit: int) -> tuple[list[bytes], Iterator[bytes] | None]:
    """The first chunks, up to just over ``limit`` bytes, and the rest (None: no more)."""
    head: list[bytes] = []
    size = 0
    rest = iter(chunks)
    for chunk in rest:
        head.append(chunk)
        size += len(chunk)
        if size > limit:
            return head, rest
    return head, None


def _failed(relpath: str, exc: OSError) -> BackupError:
    return BackupError(f"restoring {relpath or '.'!r} failed: {exc.strerror or exc}")


class RestoreTarget:
    """A directory being restored into; see the module docstring for the guarantees.

    Call :meth:`directory`, :meth:`file` and :meth:`symlink` for the entries in any order,
    then :meth:`finish`; on any failure call :meth:`abort` (used as a context manager,
    leaving the block by an exception or without :meth:`finish` aborts).
    """

    def __init__(
        self,
        root: Path,
        *,
        overwrite: bool = False,
        special_bits: bool = False,
        batch_files: int = BATCH_FILES,
        batch_bytes: int = BATCH_BYTES,
        meta: MetaApplier | None = None,
    ) -> None:
        """Open ``root`` (created with its parents when missing) for restoring.

        Files are published ``batch_files`` files or ``batch_bytes`` bytes at a time
        (whichever comes first), by a publishing thread once all of them are fsynced;
        ``batch_files=1`` renames each file as soon as it is durable. ``meta`` applies the
        owners and extended attributes given to the entry methods (None: they are ignored).

        Raises ConfigurationError for a batch bound below 1; BackupError when ``root``
        cannot be created or opened as a directory, or is not empty and ``overwrite``
        is false.
        """
        if batch_files < 1:
            raise ConfigurationError("batch_files must be at least 1", field="batch_files")
        if batch_bytes < 1:
            raise ConfigurationError("batch_bytes must be at least 1", field="batch_bytes")
        self._batch_files = batch_files
        self._batch_bytes = batch_bytes
        self.root = Path(root)
        self.overwrite = overwrite
        self.special_bits = special_bits
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # The root itself is the caller's choice, so a symlink there is followed once.
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BackupError(
                f"cannot open restore target {str(self.root)!r}: {exc.strerror or exc}"
            ) from exc
        if not overwrite and os.listdir(self._root_fd):
            os.close(self._root_fd)
            raise BackupError(
                f"restore target {str(self.root)!r} is not empty "
                "(pass overwrite=True to restore over it)"
            )
        self._closed = False
        self._busy = False
        self._meta = meta
        self._kinds: dict[str, _Kind] = {}
        self._dir_meta: dict[str, tuple[int, int, FileMeta | None]] = {}
        self._symlinks: dict[str, tuple[str, int | None, FileMeta | None]] = {}
        # Hard links to create once every file is in place: (link, file it names).
        self._hardlinks: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        # Pre-existing directories made writable for the restore, with their original mode.
        self._loosened: dict[str, int] = {}
        # Temporary names alive right now: (owned directory fd, name).
        self._temps: dict[int, tuple[_Dir, str]] = {}
        self._temp_keys = 0
        # Written files waiting for their batch's rename, in entry order (a later entry for
        # the same name must win), and their bytes.
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        # Batches are fsynced and renamed by one more thread, one batch at a time.
        self._publisher: ThreadPoolExecutor | None = None
        self._publication: Future[None] | None = None
        self._publishing: list[_Pending] = []
        # Writes handed to the pool and not known to be done, with their sizes.
        self._in_flight: deque[tuple[Future[int], int]] = deque()
        self._in_flight_bytes = 0
        self._cached_parent: tuple[tuple[str, ...], _Dir] | None = None
        self._temp_stem = secrets.token_hex(8)
        self._temp_count = 0

    # -- the entries ---------------------------------------------------------------

    def directory(
        self, relpath: str, *, mode: int, mtime_ns: int, meta: FileMeta | None = None
    ) -> None:
        """Create the directory ``relpath`` (and missing parents); its mode and mtime are
        applied by :meth:`finish`.

        Raises UnsafeRestoreError for a path that escapes the target or conflicts with
        another entry, BackupError when the filesystem refuses.
        """
        self._check_open()
        parts = split_relpath(relpath)
        self._claim(parts, "dir")
        try:
            os.close(self._walk(parts))
        except OSError as exc:
            raise _failed(relpath, exc) from exc
        self._dir_meta[relpath] = (stat.S_IMODE(mode), mtime_ns, meta)

    def file(
        self,
        relpath: str,
        chunks: Iterable[bytes],
        *,
        mode: int,
        mtime_ns: int,
        meta: FileMeta | None = None,
    ) -> None:
        """Write ``chunks`` as the file ``relpath``: to a temporary name now, renamed into
        place once its batch is durable (at the latest by :meth:`finish`).

        An exception from ``chunks`` (e.g. IntegrityError) propagates after the temporary
        file is removed. Raises UnsafeRestoreError for a path that escapes the target or
        conflicts with another entry, BackupError when the filesystem refuses (also for
        a file of the previous batch, whose publication a call completing a batch waits
        for).
        """
        self._check_open()
        parts = split_relpath(relpath)
        self._claim(parts, "file")
        bits = 0o7777 if self.special_bits else 0o1777
        # abort() may run while ``chunks`` is being consumed (a signal handler, a
        # cancelled task); it then leaves the descriptors this write uses open for it.
        self._busy = True
        try:
            try:
                parent = self._parent(parts)
                if self.overwrite:
                    # A directory of the user's where the backup has a file: refused
                    # before writing. In a target that was empty one can only appear by
                    # a race, and the rename refuses it (EISDIR): no lstat per file.
                    self._check_replaceable(parent, parts)
            except OSError as exc:
                raise _failed(relpath, exc) from exc
            head, rest = _take(chunks, _SMALL_FILE)
            if self._closed:
                raise BackupError(f"restoring {relpath!r} was aborted")
            apply_meta = self._meta_for(meta, relpath)
            if rest is None:
                self._write_later(
                    parent, parts, head, stat.S_IMODE(mode) & bits, mtime_ns, apply_meta
                )
            else:
                self._write_now(
                    parent,
                    parts,
                    chain(head, rest),
                    stat.S_IMODE(mode) & bits,
                    mtime_ns,
                    apply_meta,
                )
            if len(self._pending) >= self._batch_files or self._pending_bytes >= self._batch_bytes:
                self._flush()
        finally:
            self._busy = False
            if self._closed:
                self._release()

    def _meta_for(self, meta: FileMeta | None, relpath: str) -> _ApplyMeta | None:
        applier = self._meta
        if applier is None or meta is None or meta == FileMeta():
            return None
        return lambda fd: applier.to_fd(fd, meta, relpath)

    def _write_later(
        self,
        parent: int,
        parts: tuple[str, ...],
        chunks: list[bytes],
        mode: int,
        mtime_ns: int,
        apply_meta: _ApplyMeta | None = None,
    ) -> None:
        """Hand a small file to a writer thread; :meth:`_flush` waits for it."""
        temp = self._temp_name()
        # Registered before it exists: _release() waits for the writers, then removes it.
        key = self._remember_temp(parent, temp)
        future = self._writers().submit(
            _write_temp, parent, temp, chunks, mode, mtime_ns, apply_meta
        )
        size = sum(len(chunk) for chunk in chunks)
        self._pending.append(_Pending(key, parent, parts, temp, future))
        self._pending_bytes += size
        self._in_flight.append((future, size))
        self._in_flight_bytes += size
        while self._in_flight and (
            self._in_flight[0][0].done() or self._in_flight_bytes > _IN_FLIGHT_BYTES
        ):
            done, done_size = self._in_flight.popleft()
            wait_for([done])
            self._in_flight_bytes -= done_size

    def _write_now(
        self,
        parent: int,
        parts: tuple[str, ...],
        chunks: Iterable[bytes],
        mode: int,
        mtime_ns: int,
        apply_meta: _ApplyMeta | None = None,
    ) -> None:
        """Stream a large file to a temporary name in this thread."""
        relpath = "/".join(parts)
        try:
            fd, temp = self._create_temp(parent)
            key = self._remember_temp(parent, temp)
            size = 0
            try:
                size = _write_sparse(fd, chunks)
                if apply_meta is not None:
                    apply_meta(fd)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                if self._closed:
                    raise BackupError(f"restoring {relpath!r} was aborted")
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=parent)
                self._forget_temp(key)
                raise
        except OSError as exc:
            raise _failed(relpath, exc) from exc
        self._pending.append(_Pending(key, parent, parts, temp, None, fd))
        self._pending_bytes += size

    def symlink(
        self,
        relpath: str,
        target: str,
        *,
        mtime_ns: int | None = None,
        meta: FileMeta | None = None,
    ) -> None:
        """Record the symlink ``relpath`` -> ``target``; :meth:`finish` creates it.

        ``target`` is stored as it is (a link may point anywhere; it is never followed).
        Raises UnsafeRestoreError for a path that escapes the target or conflicts with
        another entry, or a target that is empty, not a string or contains NUL.
        """
        self._check_open()
        parts = split_relpath(relpath)
        if not isinstance(target, str) or not target or "\x00" in target:
            raise UnsafeRestoreError(f"symlink {relpath!r} has an invalid target {target!r}")
        self._claim(parts, "symlink")
        self._symlinks[relpath] = (target, mtime_ns, meta)

    def hardlink(self, relpath: str, target: str) -> None:
        """Record ``relpath`` as a hard link to ``target``, a path given to :meth:`file`
        (or :meth:`hardlink`) earlier in this restore; :meth:`finish` creates it.

        Raises UnsafeRestoreError when either path escapes the target, ``target`` is not
        a file of this restore (a directory, a symlink, something outside or before the
        restore), or ``relpath`` conflicts with another entry.
        """
        self._check_open()
        parts = split_relpath(relpath)
        target_parts = split_relpath(target)
        if self._kinds.get("/".join(target_parts)) != "file":
            raise UnsafeRestoreError(
                f"hard link {relpath!r} names {target!r}, which is not a file of this restore"
            )
        self._claim(parts, "file")
        self._hardlinks.append((parts, target_parts))

    def finish(self) -> None:
        """Create the symlinks, then apply directory modes and mtimes deepest first and
        fsync every directory. The target is closed afterwards, also on failure.

        Raises UnsafeRestoreError or BackupError as the entry methods do.
        """
        self._check_open()
        # Like file(): an abort() from a signal handler must not close the descriptors
        # in use; it only marks the target closed, and this returns by raising.
        self._busy = True
        try:
            self._flush(wait=True)
            for parts, target_parts in self._hardlinks:
                try:
                    self._create_hardlink(parts, target_parts)
                except OSError as exc:
                    raise _failed("/".join(parts), exc) from exc
            for relpath, (target, mtime_ns, meta) in self._symlinks.items():
                try:
                    self._create_symlink(relpath, target, mtime_ns, meta)
                except OSError as exc:
                    raise _failed(relpath, exc) from exc
            self._settle_directories()
        finally:
            self._busy = False
            self.abort()
            if self._closed and self._root_fd >= 0:
                self._release()

    def abort(self) -> None:
        """Remove the temporary files of unfinished writes, including the written files
        of the batch not yet complete, and close the target.

        Files already renamed into place are complete and stay, and so do those of a
        complete batch being published (abort waits for it). Never raises; calling it
        again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        # Inside file() or finish() (a signal handler, a chunk stream calling this), the
        # call in progress releases everything when it returns: waiting for the writer
        # threads here could deadlock on the pool's lock held by this same thread.
        if not self._busy:
            self._release()

    def _release(self) -> None:
        """Wait for the publishing and writer threads, remove every temporary file and
        close."""
        if self._publisher is not None:
            # First: it waits for writes and submits fsyncs to the writers. The batch
            # handed to it (one at most) is published unless it fails; the temporary
            # names it renamed are gone already (ENOENT, ignored below).
            self._publisher.shutdown(wait=True)
            self._publisher = None
        self._publication = None
        if self._pool is not None:
            # Queued writes never start; running ones finish, so their files are known.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight.clear()
        self._in_flight_bytes = 0
        for item in chain(self._publishing, self._pending):
            self._close_written(item)
        self._publishing = []
        for directory, temp in self._temps.values():
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory.fd)
            self._unuse(directory)
        self._temps.clear()
        self._pending.clear()
        self._pending_bytes = 0
        self._drop_cached_parent()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> RestoreTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    # -- bookkeeping -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackupError("this restore target is already finished or aborted")

    def _claim(self, parts: tuple[str, ...], kind: _Kind) -> None:
        """Record that ``parts`` is a ``kind`` and its prefixes are directories.

        Catches symlink-then-write and file-then-write however the entries are ordered.
        """
        relpath = "/".join(parts)
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for prefix in prefixes:
            known = self._kinds.get(prefix, "dir")
            if known != "dir":
                raise UnsafeRestoreError(
                    f"{relpath!r} lies under {prefix!r}, restored as a {known}"
                )
        known_kind = self._kinds.get(relpath)
        if known_kind is not None and known_kind != kind:
            raise UnsafeRestoreError(f"{relpath!r} is restored as both a {known_kind} and a {kind}")
        for prefix in prefixes:
            self._kinds[prefix] = "dir"
        self._kinds[relpath] = kind

    def _remember_temp(self, parent: int, temp: str) -> int:
        """Record ``temp`` in the directory ``parent`` (from :meth:`_parent`), keeping
        the directory open until the temporary file is renamed or removed; its key."""
        cached = self._cached_parent
        if cached is not None and cached[1].fd == parent:
            directory = cached[1]
            directory.users += 1
        else:
            directory = _Dir(os.dup(parent))
        self._temp_keys += 1
        self._temps[self._temp_keys] = (directory, temp)
        return self._temp_keys

    def _forget_temp(self, key: int) -> None:
        entry = self._temps.pop(key, None)
        if entry is not None:
            self._unuse(entry[0])

    @staticmethod
    def _unuse(directory: _Dir) -> None:
        directory.users -= 1
        if directory.users == 0:
            os.close(directory.fd)

    def _flush(self, *, wait: bool = False) -> None:
        """Hand the pending batch to the publishing thread, once the batch before it is
        published (so at most two batches are unpublished, and batches are renamed in
        order); with ``wait``, also wait for it. Meanwhile the caller goes on writing.

        Raises what publishing the previous batch (or, with ``wait``, this one) raised:
        BackupError (or UnsafeRestoreError for a directory that appeared at a file's
        name) naming the file that failed; the rest stays as temporary files for
        :meth:`abort` to remove.
        """
        self._await_publication()
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            writers = self._writers()  # created on this thread, used by both
            if self._publisher is None:
                self._publisher = ThreadPoolExecutor(1, thread_name_prefix="sergas-publish")
            self._publishing = batch
            self._publication = self._publisher.submit(self._publish, batch, writers)
        if wait:
            self._await_publication()

    def _await_publication(self) -> None:
        publication, self._publication = self._publication, None
        if publication is None:
            return
        publication.result()  # on failure _publishing stays, for _release()
        for item in self._publishing:
            self._forget_temp(item.key)
        self._publishing = []

    def _publish(self, batch: list[_Pending], writers: ThreadPoolExecutor) -> None:
        """On the publishing thread: wait for the batch's writes, fsync its files side by
        side, then rename them into place in entry order."""
        # Every write of the batch must be complete and durable before any rename.
        for item in batch:
            if item.write is not None:
                try:
                    item.fd = item.write.result()
                except OSError as exc:
                    raise _failed("/".join(item.parts), exc) from exc
                item.write = None
        # Each file's data has been on its way to the disk since it was written; fsyncs
        # running side by side then share the filesystem's journal commits.
        syncs = [(item, writers.submit(os.fsync, item.fd)) for item in batch]
        for item, sync in syncs:
            try:
                sync.result()
            except OSError as exc:
                raise _failed("/".join(item.parts), exc) from exc
        for item in batch:
            self._close_written(item)
        # Not stopped by abort(): a batch handed over is complete, and is published.
        for item in batch:
            relpath = "/".join(item.parts)
            try:
                # rename(2) never replaces a directory by a file: EISDIR.
                os.replace(
                    item.temp, item.parts[-1], src_dir_fd=item.parent, dst_dir_fd=item.parent
                )
            except IsADirectoryError:
                raise self._directory_in_the_way(item.parts) from None
            except OSError as exc:
                raise _failed(relpath, exc) from exc

    def _writers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="sergas-restore")
        return self._pool

    @staticmethod
    def _close_written(item: _Pending) -> None:
        """Close the descriptor of a written file (after the writer threads stopped)."""
        if item.write is not None and item.write.done() and not item.write.cancelled():
            if item.write.exception() is None:
                item.fd = item.write.result()
            item.write = None
        if item.fd >= 0:
            os.close(item.fd)
            item.fd = -1

    def _drop_cached_parent(self) -> None:
        if self._cached_parent is not None:
            self._unuse(self._cached_parent[1])
            self._cached_parent = None

    # -- walking -----------------------------------------------------------------------

    def _parent(self, parts: tuple[str, ...]) -> int:
        """A borrowed fd of the directory holding ``parts[-1]`` (cached: entries usually
        come directory by directory)."""
        parent_parts = parts[:-1]
        if self._cached_parent is not None and self._cached_parent[0] == parent_parts:
            return self._cached_parent[1].fd
        fd = self._walk(parent_parts)
        self._drop_cached_parent()
        self._cached_parent = (parent_parts, _Dir(fd))
        return fd

    def _walk(self, parts: tuple[str, ...]) -> int:
        """A new fd of the directory ``parts``, creating missing directories, never
        following a symlink."""
        fd = self._open_root()
        try:
            for depth, name in enumerate(parts, start=1):
                child = self._open_child(fd, name, "/".join(parts[:depth]))
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_root(self) -> int:
        fd = os.dup(self._root_fd)
        self._loosen(fd, "")
        return fd

    def _open_child(self, parent: int, name: str, relpath: str) -> int:
        for _ in range(_ATTEMPTS):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                # Directories are private while being filled; finish() sets the real mode.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                self._remove_non_directory(parent, name, relpath)
                continue
            self._loosen(child, relpath)
            return child
        raise UnsafeRestoreError(f"{relpath!r} kept changing while it was restored")

    def _remove_non_directory(self, parent: int, name: str, relpath: str) -> None:
        """A symlink or file sits where a directory belongs: gone if it predates an
        overwrite restore, refused otherwise (the target was empty, so a racer put it there)."""
        st = os.lstat(name, dir_fd=parent)
        if stat.S_ISDIR(st.st_mode):
            return
        if not self.overwrite:
            raise UnsafeRestoreError(f"{relpath!r} appeared as a non-directory during the restore")
        os.unlink(name, dir_fd=parent)

    def _loosen(self, fd: int, relpath: str) -> None:
        """Give the owner rwx on a pre-existing directory for the restore; finish() puts
        back its mode unless the backup sets one."""
        if relpath in self._loosened:
            return
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o700 != 0o700:
            self._loosened[relpath] = mode
            with contextlib.suppress(PermissionError):
                os.fchmod(fd, mode | 0o700)

    def _create_temp(self, parent: int) -> tuple[int, str]:
        for _ in range(_ATTEMPTS):
            temp = self._temp_name()
            try:
                return os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=parent), temp
            except FileExistsError:
                continue
        raise BackupError("cannot find a free temporary name in the restore target")

    def _check_replaceable(self, parent: int, parts: tuple[str, ...]) -> None:
        """Refuse to rename over a directory (a rename would fail or drop user data)."""
        try:
            st = os.lstat(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise self._directory_in_the_way(parts)

    def _directory_in_the_way(self, parts: tuple[str, ...]) -> BackupError:
        relpath = "/".join(parts)
        if not self.overwrite:
            return UnsafeRestoreError(f"{relpath!r} appeared as a directory during the restore")
        return BackupError(f"{relpath!r} is an existing directory in the target; not replaced")

    def _temp_name(self) -> str:
        # One random stem per target and a counter: a system call per file saved.
        self._temp_count += 1
        return f"{TEMP_PREFIX}{self._temp_stem}{self._temp_count:08x}.tmp"

    # -- finishing -------------------------------------------------------------------

    def _create_hardlink(self, parts: tuple[str, ...], target_parts: tuple[str, ...]) -> None:
        """Link ``parts`` to the regular file ``target_parts`` (both inside the target,
        walked without following symlinks), under a temporary name renamed into place."""
        relpath = "/".join(parts)
        source_dir = self._walk(target_parts[:-1])
        try:
            st = os.lstat(target_parts[-1], dir_fd=source_dir)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeRestoreError(
                    f"hard link {relpath!r} names {'/'.join(target_parts)!r}, not a file"
                )
            parent = self._parent(parts)
            temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
            # linkat without AT_SYMLINK_FOLLOW: a symlink swapped in is linked, not followed.
            os.link(
                target_parts[-1],
                temp,
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
            self._publish_link(parent, temp, parts)
        finally:
            os.close(source_dir)

    def _publish_link(
        self,
        parent: int,
        temp: str,
        parts: tuple[str, ...],
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """Run ``prepare``, then rename ``temp`` (just created in ``parent``) onto
        ``parts[-1]``, never over a directory; ``temp`` is removed if that fails."""
        key = self._remember_temp(parent, temp)
        try:
            if prepare is not None:
                prepare()
            self._check_replaceable(parent, parts)
            os.replace(temp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
        finally:
            self._forget_temp(key)

    def _create_symlink(
        self, relpath: str, target: str, mtime_ns: int | None, meta: FileMeta | None = None
    ) -> None:
        parts = split_relpath(relpath)
        parent = self._parent(parts)
        for _ in range(_ATTEMPTS):
            temp = self._temp_name()
            try:
                os.symlink(target, temp, dir_fd=parent)
                break
            except FileExistsError:
                continue
        else:
            raise BackupError("cannot find a free temporary name in the restore target")

        def prepare() -> None:
            if self._meta is not None:
                self._meta.to_link(temp, parent, meta, relpath)
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)

        self._publish_link(parent, temp, parts, prepare)

    def _settle_directories(self) -> None:
        """Apply modes and mtimes deepest first and fsync every directory of the restore."""
        self._drop_cached_parent()
        dirs = {path for path, kind in self._kinds.items() if kind == "dir"}
        dirs.update(self._loosened)
        dirs.discard("")
        for relpath in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            try:
                fd = self._walk(tuple(relpath.split("/")))
                try:
                    self._settle(fd, relpath)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _failed(relpath, exc) from exc
        try:
            self._settle(self._root_fd, "")
        except OSError as exc:
            raise _failed("", exc) from exc

    def _settle(self, fd: int, relpath: str) -> None:
        meta = self._dir_meta.get(relpath)
        if meta is not None:
            if self._meta is not None:
                self._meta.to_fd(fd, meta[2], relpath)
            os.fchmod(fd, meta[0])
            os.utime(fd, ns=(meta[1], meta[1]))
        elif relpath in self._loosened:
            os.fchmod(fd, self._loosened[relpath])
        os.fsync(fd)
