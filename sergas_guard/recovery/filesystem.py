"""Backing up a tree of files: the filesystem strategy, the walk and the file reader.

:func:`scan_tree` walks a tree without ever following a symbolic link (a link is stored
as a link, so a backup never leaves its source through one), in a stable order with
each directory before what it holds. :func:`back_up_tree` turns the walk into manifest
entries: a file whose size, mtime, ctime and inode match the parent backup's entry
re-uses the parent's chunks without being read; any other file is streamed through the
repository's chunker (a 5 GiB file never sits in memory) and its SHA-256 recorded.

A file whose timestamps fall within :data:`RACY_SLACK_NS` of the parent backup's start
could have been rewritten in the same clock tick after the parent read it (git's
"racily clean" problem), so it is read again rather than trusted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sergas_guard.errors import BackupError, ConfigurationError
from sergas_guard.recovery.manifest import Entry, Manifest

__all__ = [
    "RACY_SLACK_NS",
    "ChunkSink",
    "ChunkSource",
    "FileSystemBackupStrategy",
    "ScannedEntry",
    "TreeStats",
    "back_up_tree",
    "scan_tree",
]

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
    files_read: int = 0
    files_reused: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts, by name."""
        return {
            "size_bytes": self.size_bytes,
            "file_count": self.file_count,
            "dir_count": self.dir_count,
            "symlink_count": self.symlink_count,
            "files_read": self.files_read,
            "files_reused": self.files_reused,
        }


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
    """The manifest entries of the tree at ``root``, its files' chunks added to ``sink``.

    Unchanged files of ``parent`` (same size, mtime, ctime and inode, not racily fresh,
    every chunk still in ``source``) re-use the parent's chunks unread. ``on_file`` is
    called with each file's entry once it is done. Raises BackupError when a file cannot
    be read.
    """
    previous: dict[str, Entry] = {}
    stats = TreeStats()
    parent_started_ns = 0
    if parent is not None:
        parent_started_ns = int(parent.created_at.timestamp() * 1_000_000_000)
        previous = {entry.path: entry for entry in parent.entries if entry.type == "file"}
    entries: list[Entry] = []
    for scanned in scan_tree(root, exclude=exclude, one_file_system=one_file_system):
        st = scanned.status
        if scanned.type == "dir":
            stats.dir_count += 1
            entries.append(_entry(scanned.path, "dir", st))
        elif scanned.type == "symlink":
            stats.symlink_count += 1
            entries.append(_entry(scanned.path, "symlink", st, target=scanned.target))
        else:
            old = previous.get(scanned.path)
            if old is not None and _unchanged(old, st, parent_started_ns, source):
                entry = old
                stats.files_reused += 1
            else:
                read = _read_file(scanned, source, sink, compress)
                if read is None:  # vanished or no longer a regular file
                    continue
                entry = read
                stats.files_read += 1
            stats.file_count += 1
            stats.size_bytes += entry.size
            entries.append(entry)
            if on_file is not None:
                on_file(entry)
    return entries, stats


def _entry(path: str, kind: str, st: os.stat_result, *, target: str | None = None) -> Entry:
    return Entry(
        path=path,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == "file" else 0,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        target=target,
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
    )


def _chunks(source: ChunkSource, stream: BinaryIO) -> Iterable[bytes]:
    try:
        yield from source.chunks_of(stream)
    except OSError as exc:
        raise BackupError(f"read error: {exc.strerror}") from None
