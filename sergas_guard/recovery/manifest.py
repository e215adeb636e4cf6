"""The manifest of one backup: what it is, and every entry of the tree it saved.

A manifest is a header and a stream of entries. The header (version 2)::

    {"version": 2, "backup_id", "name", "type": "full|incremental|differential|snapshot",
     "strategy": <registered name>, "kind", "source", "parent_id", "chain_root_id",
     "created_at", "completed_at" (ISO 8601, UTC), "retention_days",
     "stats": {"size_bytes", "file_count", "dir_count", "symlink_count", "hardlink_count",
               "stored_bytes", "files_read", "files_reused",
               "resumed_packs" (packs of an interrupted backup found unindexed)}}

and each entry::

    {"path": "a/b.txt", "type": "file|dir|symlink|hardlink", "mode", "mtime_ns", "size",
     "inode", "ctime_ns", "uid", "gid", "owner", "group" (names, when known),
     "xattrs": {name: base64 value} (when any),
     "chunks": [chunk ids], "sha256" (files), "target" (symlinks: the link's text;
     hard links: the path of the file, earlier in the same manifest, they share)}

Entry paths are relative POSIX paths in walk order: at each level sorted by name, a
directory before what it holds (the order of :func:`walk_key`). Every backup lists the
*whole* tree, so a restore never needs another manifest and a file deleted between two
backups is simply absent from the later one. ``manifest_file`` stores the header apart
from the entries, so listing backups never reads an entry and nothing holds them all.

Version 1 (still read) kept the entries in the same document, without owners, extended
attributes or hard links.

:func:`parse_header` and :func:`parse_entry` check the shape of what is read back (a
manifest is data from disk, not trusted code); the path safety of a restore is the
restore target's job.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sergas_guard.errors import IntegrityError
from sergas_guard.recovery.types import BackupMetadata, BackupType

__all__ = [
    "MANIFEST_VERSION",
    "Entries",
    "Entry",
    "Manifest",
    "StoredEntries",
    "metadata_of",
    "parse_entry",
    "parse_header",
    "parse_manifest",
    "walk_key",
]

MANIFEST_VERSION = 2
_READABLE_VERSIONS = frozenset({1, 2})
_ENTRY_TYPES = frozenset({"file", "dir", "symlink", "hardlink"})


def walk_key(path: str) -> tuple[str, ...]:
    """The sort key of walk order: by name at each level, a directory before what it
    holds (plain string order would put ``a-b`` between ``a`` and ``a/x``)."""
    return tuple(path.split("/"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One file, directory, symbolic link or hard link of a backed-up tree.

    ``uid``/``gid`` are None when unknown (a version-1 manifest); ``owner``/``group``
    are the names they had where the backup ran, when they had one. ``xattrs`` holds
    (name, value) pairs in name order. For a ``hardlink``, ``target`` is the path of the
    file it shares with (stored once, under that path).
    """

    path: str
    type: str
    mode: int
    mtime_ns: int
    size: int = 0
    inode: int = 0
    ctime_ns: int = 0
    chunks: tuple[str, ...] = ()
    sha256: str | None = None
    target: str | None = None
    uid: int | None = None
    gid: int | None = None
    owner: str | None = None
    group: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the entry (keys that do not apply are left out)."""
        out: dict[str, Any] = {
            "path": self.path,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "size": self.size,
            "inode": self.inode,
            "ctime_ns": self.ctime_ns,
        }
        for key in ("uid", "gid", "owner", "group"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.xattrs:
            out["xattrs"] = {
                name: base64.b64encode(value).decode("ascii") for name, value in self.xattrs
            }
        if self.type == "file":
            out["chunks"] = list(self.chunks)
            out["sha256"] = self.sha256
        if self.type in ("symlink", "hardlink"):
            out["target"] = self.target
        return out


class Entries(Protocol):
    """What :attr:`Manifest.entries` is: iterable (again and again) and sized. A tuple
    is one; a manifest read from a repository holds :class:`StoredEntries`."""

    def __iter__(self) -> Iterator[Entry]: ...

    def __len__(self) -> int: ...


class StoredEntries:
    """The entries of a stored manifest, read and checked segment by segment each time
    they are iterated (never all in memory).

    Iterating raises IntegrityError naming the backup when an entry is malformed or a
    segment is damaged, BackupNotFoundError when the manifest was removed meanwhile.
    """

    def __init__(self, read: Callable[[], Iterable[object]], count: int, backup_id: str) -> None:
        self._read = read
        self._count = count
        self.backup_id = backup_id

    def __repr__(self) -> str:
        return f"StoredEntries({self.backup_id!r}, {self._count} entries)"

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        for item in self._read():
            yield parse_entry(item, backup_id=self.backup_id)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A backup's manifest, as written to and read from the repository."""

    backup_id: str
    name: str
    type: BackupType
    strategy: str
    kind: str
    source: str
    parent_id: str | None
    chain_root_id: str
    created_at: datetime
    completed_at: datetime
    retention_days: int | None
    stats: dict[str, int] = field(default_factory=dict)
    entries: Entries = ()

    def header_dict(self) -> dict[str, Any]:
        """The JSON header the repository stores (everything but the entries)."""
        return {
            "version": MANIFEST_VERSION,
            "backup_id": self.backup_id,
            "name": self.name,
            "type": self.type.value,
            "strategy": self.strategy,
            "kind": self.kind,
            "source": self.source,
            "parent_id": self.parent_id,
            "chain_root_id": self.chain_root_id,
            "created_at": self.created_at.isoformat(),
            "completed_at": self.completed_at.isoformat(),
            "retention_days": self.retention_days,
            "stats": dict(self.stats),
        }

    def to_dict(self) -> dict[str, Any]:
        """The header with every entry in ``entries`` (all in memory)."""
        return {**self.header_dict(), "entries": [entry.to_dict() for entry in self.entries]}


def metadata_of(manifest: Manifest, *, verified_at: datetime | None = None) -> BackupMetadata:
    """The :class:`BackupMetadata` a manifest describes (``verified_at``: when a
    verification last found the backup sound)."""
    return BackupMetadata(
        backup_id=manifest.backup_id,
        name=manifest.name,
        backup_type=manifest.type,
        strategy=manifest.strategy,
        source=manifest.source,
        created_at=manifest.created_at,
        completed_at=manifest.completed_at,
        parent_id=manifest.parent_id,
        chain_root_id=manifest.chain_root_id,
        retention_days=manifest.retention_days,
        size_bytes=manifest.stats.get("size_bytes", 0),
        file_count=manifest.stats.get("file_count", 0),
        stored_bytes=manifest.stats.get("stored_bytes", 0),
        verified_at=verified_at,
    )


def parse_manifest(data: object, *, backup_id: str) -> Manifest:
    """The :class:`Manifest` in ``data``: a decoded JSON document holding its entries.

    Raises IntegrityError naming ``backup_id`` when the document is not a version-1 or
    version-2 manifest of the expected shape, or names another backup than ``backup_id``.
    """
    try:
        items = _list(_mapping(data, "manifest")["entries"], "entries")
    except (KeyError, TypeError) as exc:
        raise IntegrityError(f"manifest of backup {backup_id!r} is malformed: {exc}") from None
    entries = tuple(parse_entry(item, backup_id=backup_id) for item in items)
    return parse_header(data, backup_id=backup_id, entries=entries)


def parse_header(data: object, *, backup_id: str, entries: Entries = ()) -> Manifest:
    """The :class:`Manifest` whose header is ``data`` (a decoded JSON document; any
    ``entries`` in it are ignored) and whose entries are ``entries``.

    Raises IntegrityError naming ``backup_id`` when the header is malformed, of an
    unknown version, or names another backup than ``backup_id``.
    """
    try:
        return _header(data, backup_id, entries)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"manifest of backup {backup_id!r} is malformed: {exc}") from None


def parse_entry(data: object, *, backup_id: str) -> Entry:
    """The :class:`Entry` in ``data`` (a decoded JSON object).

    Raises IntegrityError naming ``backup_id`` when it is not an entry of the expected
    shape.
    """
    try:
        return _entry(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"manifest of backup {backup_id!r} is malformed: {exc}") from None


def _header(data: object, backup_id: str, entries: Entries) -> Manifest:
    doc = _mapping(data, "manifest")
    if doc["version"] not in _READABLE_VERSIONS:
        raise ValueError(f"unsupported manifest version {doc['version']!r}")
    if doc["backup_id"] != backup_id:
        raise ValueError(f"it names backup {doc['backup_id']!r}")
    stats = _mapping(doc.get("stats", {}), "stats")
    return Manifest(
        backup_id=backup_id,
        name=_str(doc["name"], "name"),
        type=BackupType(doc["type"]),
        strategy=_str(doc["strategy"], "strategy"),
        kind=_str(doc["kind"], "kind"),
        source=_str(doc["source"], "source"),
        parent_id=_optional_str(doc["parent_id"], "parent_id"),
        chain_root_id=_str(doc["chain_root_id"], "chain_root_id"),
        created_at=_datetime(doc["created_at"], "created_at"),
        completed_at=_datetime(doc["completed_at"], "completed_at"),
        retention_days=_optional_int(doc["retention_days"], "retention_days"),
        stats={_str(key, "stats key"): _int(value, "stats") for key, value in stats.items()},
        entries=entries,
    )


def _entry(data: object) -> Entry:
    doc = _mapping(data, "entry")
    kind = _str(doc["type"], "type")
    if kind not in _ENTRY_TYPES:
        raise ValueError(f"unknown entry type {kind!r}")
    chunks: tuple[str, ...] = ()
    sha256 = target = None
    if kind == "file":
        chunks = tuple(_str(chunk, "chunks") for chunk in _list(doc["chunks"], "chunks"))
        sha256 = _str(doc["sha256"], "sha256")
    elif kind in ("symlink", "hardlink"):
        target = _str(doc["target"], "target")
    xattrs = _mapping(doc.get("xattrs", {}), "xattrs")
    return Entry(
        path=_str(doc["path"], "path"),
        type=kind,
        mode=_int(doc["mode"], "mode"),
        mtime_ns=_int(doc["mtime_ns"], "mtime_ns"),
        size=_int(doc.get("size", 0), "size"),
        inode=_int(doc.get("inode", 0), "inode"),
        ctime_ns=_int(doc.get("ctime_ns", 0), "ctime_ns"),
        chunks=chunks,
        sha256=sha256,
        target=target,
        uid=_optional_int(doc.get("uid"), "uid"),
        gid=_optional_int(doc.get("gid"), "gid"),
        owner=_optional_str(doc.get("owner"), "owner"),
        group=_optional_str(doc.get("group"), "group"),
        xattrs=tuple(
            sorted(
                (_str(name, "xattr name"), base64.b64decode(_str(value, "xattr"), validate=True))
                for name, value in xattrs.items()
            )
        ),
    )


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} is not a list")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _optional_str(value: object, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _int(value: object, what: str) -> int:
    # bool is an int subclass; a manifest saying "mode": true is malformed, not mode 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} is not an integer")
    return value


def _optional_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _datetime(value: object, what: str) -> datetime:
    parsed = datetime.fromisoformat(_str(value, what))
    if parsed.tzinfo is None:
        raise ValueError(f"{what} has no time zone")
    return parsed
