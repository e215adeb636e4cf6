"""Backing up a tree of files: the filesystem strategy, the walk and the file reader.

:func:`scan_tree` walks a tree without ever following a symbolic link (a link is stored
as a link, so a backup never leaves its source through one), in a stable order with
each directory before what it holds. :func:`walk_entries` turns the walk into manifest
entries one at a time (a backup streams them into its manifest): a file whose size,
mtime, ctime and inode match the parent backup's entry re-uses the parent's chunks
without being read (the parent's entries are merged with the walk, both being in walk
order, so neither manifest is ever held whole); any other file is streamed through the
repository's chunker (a 5 GiB file never sits in memory) and its SHA-256 recorded.
Owners, extended attributes and hard links are recorded too (see ``file_meta``).

A file whose timestamps fall within :data:`RACY_SLACK_NS` of the parent backup's start
could have been rewritten in the same clock tick after the parent read it (git's
"racily clean" problem), so it is read again rather than trusted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sergas_guard.errors import BackupError, ConfigurationError
from sergas_guard.recovery.file_meta import group_name, read_xattrs, user_name
from sergas_guard.recovery.manifest import Entry, Manifest, walk_key

__all__ = [
    "RACY_SLACK_NS",
    "ChunkSink",
    "ChunkSource",
    "FileSystemBackupStrategy",
    "ScannedEntry",
    "TreeStats",
    "back_up_tree",
    "scan_tree",
    "walk_entries",
]

logger = logging.getLogger(__name__)

#: Timestamps this close to (or after) the parent's start are too fresh to trust.
RACY_SLACK_NS = 1_000_000_000


class FileSystemBackupStrategy:
    """Back up a directory (or one file) as it is: files, directories, symbolic links,
    permission bits, modification times and empty directories.

    ``exclude`` holds glob patterns: one with a ``/`` is matched against the whole
    relative path, one without against each entry's name (``"*.tmp"``, ``".cache"``);
    an excluded directory is not entered. With ``one_file_system`` the walk does not
    descend into directories on another device than the source (mount points).
    Raises ConfigurationError for a pattern that is not a non-empty string.
    """

    kind = "filesystem"
    restores_in_place = True

    def __init__(
        self,
        compress: bool = True,
        exclude: Sequence[str] = (),
        one_file_system: bool = False,
    ) -> None:
        if isinstance(exclude, str):
            raise ConfigurationError("exclude is a list of glob patterns", field="exclude")
        for pattern in exclude:
            if not isinstance(pattern, str) or not pattern or "\0" in pattern:
                raise ConfigurationError(
                    f"exclude pattern {pattern!r} is not a non-empty string", field="exclude"
                )
        self.compress = bool(compress)
        self.one_file_system = bool(one_file_system)
        self.patterns: tuple[str, ...] = tuple(exclude)

    def __repr__(self) -> str:
        return (
            f"FileSystemBackupStrategy(compress={self.compress}, exclude={list(self.patterns)},"
            f" one_file_system={self.one_file_system})"
        )

    async def stage(self, source: str, staging: Path) -> Path:
        """``source`` itself. Raises BackupError when it is not a directory or file."""
        try:
            mode = os.stat(source).st_mode
        except OSError as exc:
            raise BackupError(f"cannot read backup source {source!r}: {exc.strerror}") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise BackupError(f"backup source {source!r} is not a directory or a file")
        return Path(source)

    def exclude(self, relative_path: str) -> bool:
        """True when ``relative_path`` matches one of the exclude patterns."""
        name = relative_path.rsplit("/", 1)[-1]
        for pattern in self.patterns:
            subject = relative_path if "/" in pattern else name
            if fnmatch.fnmatchcase(subject, pattern.strip("/")):
                return True
        return False

    async def finish_restore(self, restored: Path, destination: str) -> None:
        """Nothing: the files were restored in place."""


@dataclass(frozen=True, slots=True)
class ScannedEntry:
    """One entry found by :func:`scan_tree` (``status`` is its ``lstat``)."""

    path: str
    full_path: Path
    status: os.stat_result
    target: str | None = None

    @property
    def type(self) -> str:
        """The entry type: file, dir or symlink."""
        if stat.S_ISLNK(self.status.st_mode):
            return "symlink"
        return "dir" if stat.S_ISDIR(self.status.st_mode) else "file"


def scan_tree(
    root: Path,
    *,
    exclude: Callable[[str], bool] = lambda _: False,
    one_file_system: bool = False,
) -> Iterator[ScannedEntry]:
    """The entries under ``root`` (not ``root`` itself), sorted by name, each directory
    before its contents; a file ``root`` yields itself under its own name.

    Symbolic links are reported, never followed; sockets, FIFOs and devices are skipped,
    as are entries that vanish during the walk. Raises BackupError when ``root``
    cannot be read.
    """
    try:
        root_status = os.stat(root)
    except OSError as exc:
        raise BackupError(f"cannot read backup source {str(root)!r}: {exc.strerror}") from None
    if stat.S_ISREG(root_status.st_mode):
        yield ScannedEntry(root.name, root, root_status)
        return
    if not stat.S_ISDIR(root_status.st_mode):
        raise BackupError(f"backup source {str(root)!r} is not a directory or a file")
    # Depth first with an explicit stack of sorted listings rather than recursion: trees
    # deeper than Python's recursion limit exist. Listings are read whole and closed at
    # once, so a deep tree holds no open directory descriptors.
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _listing(root))]
    while stack:
        prefix, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        relative = f"{prefix}{child.name}"
        if exclude(relative):
            continue
        try:
            status = child.stat(follow_symlinks=False)
            target = os.readlink(child.path) if stat.S_ISLNK(status.st_mode) else None
        except FileNotFoundError:
            continue
        mode = status.st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            continue
        yield ScannedEntry(relative, Path(child.path), status, target)
        if stat.S_ISDIR(mode) and not (one_file_system and status.st_dev != root_status.st_dev):
            stack.append((f"{relative}/", _listing(Path(child.path))))


def _listing(directory: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda item: item.name)
    except FileNotFoundError:  # removed during the walk
        return iter(())
    except OSError as exc:
        raise BackupError(f"cannot list {str(directory)!r}: {exc.strerror}") from None
    return iter(children)


class ChunkSource(Protocol):
    """What :func:`back_up_tree` needs of a repository."""

    def chunks_of(self, stream: BinaryIO) -> Iterator[bytes]:
        """The content-defined chunks of ``stream``, read piece by piece."""
        ...

    def has_chunk(self, chunk_id: str) -> bool:
        """True when the repository holds the chunk."""
        ...


class _StoredChunk(Protocol):
    @property
    def id(self) -> str: ...


class ChunkSink(Protocol):
    """What :func:`back_up_tree` needs of a repository's chunk writer."""

    def add(self, data: bytes, *, compress: bool = True) -> _StoredChunk:
        """Store ``data`` (once per repository) and return its reference."""
        ...


@dataclass(slots=True)
class TreeStats:
    """Counts of one backup's tree (stored in the manifest's ``stats``)."""

    size_bytes: int = 0
    file_count: int = 0
    dir_count: int = 0
    symlink_count: int = 0
    hardlink_count: int = 0
    files_read: int = 0
    files_reused: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts, by name."""
        return {
            "size_bytes": self.size_bytes,
            "file_count": self.file_count,
            "dir_count": self.dir_count,
            "symlink_count": self.symlink_count,
            "hardlink_count": self.hardlink_count,
            "files_read": self.files_read,
            "files_reused": self.files_reused,
        }


class _ParentFiles:
    """The parent backup's file entries, looked up in walk order by merging the two
    walks: one parent entry is held at a time, never the parent's whole manifest.

    Lookups must come in walk order (as :func:`scan_tree` yields). A parent whose
    entries are out of order only loses re-use (the files are read again); one whose
    manifest turns out damaged part-way is given up with a warning, never trusted.
    """

    def __init__(self, parent: Manifest | None) -> None:
        self._backup_id = parent.backup_id if parent is not None else ""
        self._entries: Iterator[Entry] = iter(parent.entries) if parent is not None else iter(())
        self._current: Entry | None = None
        self._current_key: tuple[str, ...] = ()
        self._advance()

    def _advance(self) -> None:
        try:
            self._current = next(self._entries, None)
        except BackupError as exc:
            logger.warning(
                "parent backup %s unreadable part-way, its files are read again: %s",
                self._backup_id,
                exc,
            )
            self._current, self._entries = None, iter(())
        if self._current is not None:
            self._current_key = walk_key(self._current.path)

    def get(self, path: str) -> Entry | None:
        """The parent's file entry at ``path``, or None."""
        key = walk_key(path)
        while self._current is not None and self._current_key < key:
            self._advance()
        current = self._current
        if current is not None and current.path == path and current.type == "file":
            return current
        return None


def walk_entries(
    root: Path,
    *,
    source: ChunkSource,
    sink: ChunkSink,
    parent: Manifest | None,
    stats: TreeStats,
    exclude: Callable[[str], bool] = lambda _: False,
    one_file_system: bool = False,
    compress: bool = True,
    on_file: Callable[[Entry], None] | None = None,
) -> Iterator[Entry]:
    """The manifest entries of the tree at ``root`` in walk order, one at a time, its
    files' chunks added to ``sink`` and its counts added up in ``stats``.

    Unchanged files of ``parent`` (same size, mtime, ctime, inode and mode, not racily
    fresh, every chunk still in ``source``) re-use the parent's chunks unread; the
    parent's entries are merged with the walk, never loaded whole. A regular file with
    several links whose inode (and device) was already seen in this walk becomes a
    ``hardlink`` entry naming the first path: its data is stored once. ``on_file`` is
    called with each file's entry once it is done. Raises BackupError when a file
    cannot be read.
    """
    previous = _ParentFiles(parent)
    parent_started_ns = 0
    if parent is not None:
        parent_started_ns = int(parent.created_at.timestamp() * 1_000_000_000)
    # Only inodes with more than one link are remembered: memory grows with the hard
    # links of the source, not with its files.
    linked: dict[tuple[int, int], str] = {}
    for scanned in scan_tree(root, exclude=exclude, one_file_system=one_file_system):
        st = scanned.status
        if scanned.type == "dir":
            stats.dir_count += 1
            yield _entry(scanned, "dir")
            continue
        if scanned.type == "symlink":
            stats.symlink_count += 1
            yield _entry(scanned, "symlink", target=scanned.target)
            continue
        first = linked.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            stats.hardlink_count += 1
            yield _entry(scanned, "hardlink", target=first)
            continue
        old = previous.get(scanned.path)
        if old is not None and _unchanged(old, st, parent_started_ns, source):
            # The data is the parent's; owners and attributes are read afresh (a
            # version-1 parent has none, and they are cheap to read).
            entry = _entry(scanned, "file", chunks=old.chunks, sha256=old.sha256)
            stats.files_reused += 1
        else:
            read = _read_file(scanned, source, sink, compress)
            if read is None:  # vanished or no longer a regular file
                continue
            entry = read
            stats.files_read += 1
        if st.st_nlink > 1:
            linked[(st.st_dev, st.st_ino)] = entry.path
        stats.file_count += 1
        stats.size_bytes += entry.size
        yield entry
        if on_file is not None:
            on_file(entry)


def back_up_tree(
    root: Path,
    *,
    source: ChunkSource,
    sink: ChunkSink,
    parent: Manifest | None,
    exclude: Callable[[str], bool] = lambda _: False,
    one_file_system: bool = False,
    compress: bool = True,
    on_file: Callable[[Entry], None] | None = None,
) -> tuple[list[Entry], TreeStats]:
    """:func:`walk_entries` collected in a list, with the counts (for small trees and
    tests: a backup streams the entries into its manifest instead)."""
    stats = TreeStats()
    entries = list(
        walk_entries(
            root,
            source=source,
            sink=sink,
            parent=parent,
            stats=stats,
            exclude=exclude,
            one_file_system=one_file_system,
            compress=compress,
            on_file=on_file,
        )
    )
    return entries, stats


def _entry(
    scanned: ScannedEntry,
    kind: str,
    *,
    target: str | None = None,
    chunks: tuple[str, ...] = (),
    sha256: str | None = None,
) -> Entry:
    st = scanned.status
    return Entry(
        path=scanned.path,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == "file" else 0,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        target=target,
        chunks=chunks,
        sha256=sha256,
        uid=st.st_uid,
        gid=st.st_gid,
        owner=user_name(st.st_uid),
        group=group_name(st.st_gid),
        # Symlinks carry none on Linux (no user.* there); hard links share the file's.
        xattrs=read_xattrs(scanned.full_path) if kind in ("file", "dir") else (),
    )


def _unchanged(old: Entry, st: os.stat_result, parent_started_ns: int, source: ChunkSource) -> bool:
    if (old.size, old.mtime_ns, old.ctime_ns, old.inode) != (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
    ):
        return False
    if stat.S_IMODE(st.st_mode) != old.mode:
        return False
    if max(st.st_mtime_ns, st.st_ctime_ns) >= parent_started_ns - RACY_SLACK_NS:
        return False
    # A chunk collected since (or lost) must be written again, not referenced.
    return all(source.has_chunk(chunk) for chunk in old.chunks)


def _read_file(
    scanned: ScannedEntry,
    source: ChunkSource,
    sink: ChunkSink,
    compress: bool,
) -> Entry | None:
    # O_NOFOLLOW: the path was a regular file when listed; if it was swapped for a link
    # since, refuse rather than back up whatever the link points at.
    try:
        fd = os.open(scanned.full_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"cannot read {scanned.path!r}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as stream:
        # Stat before reading: a write during the read then shows as a change next time.
        st = os.fstat(stream.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        digest = hashlib.sha256()
        chunk_ids: list[str] = []
        size = 0
        for data in _chunks(source, stream):
            digest.update(data)
            size += len(data)
            chunk_ids.append(sink.add(data, compress=compress).id)
        xattrs = read_xattrs(stream.fileno())
    return Entry(
        path=scanned.path,
        type="file",
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        # what was read, not what fstat said: a file growing under us is stored as read
        size=size,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        chunks=tuple(chunk_ids),
        sha256=digest.hexdigest(),
        uid=st.st_uid,
        gid=st.st_gid,
        owner=user_name(st.st_uid),
        group=group_name(st.st_gid),
        xattrs=xattrs,
    )


def _chunks(source: ChunkSource, stream: BinaryIO) -> Iterable[bytes]:
    try:
        yield from source.chunks_of(stream)
    except OSError as exc:
        raise BackupError(f"read error: {exc.strerror}") from None
