"""Ownership and extended attributes: read when backing up, applied when restoring.

Owners are stored as numbers (what the kernel checks) plus the names they had where the
backup ran, when they have one (for people reading a listing); a restore applies the
numbers. Extended attributes of files and directories are stored whatever their
namespace, up to :data:`MAX_XATTR_BYTES` per entry; a filesystem without them (or a
symlink, which Linux gives no ``user.*`` attributes) simply has none.

A restore sets owners only when asked (by default: when running as root, where
``chown`` works), ``user.*`` attributes always and the privileged namespaces
(``trusted.*``, ``security.*``, ``system.*``) only as root. File capabilities
(``security.capability``) are dropped unless ``special_bits`` is given, like set-user-ID
bits: a hostile manifest must not plant a privileged program when root restores. It
never follows a symlink: everything is applied to an open descriptor or with
``follow_symlinks=False``. A filesystem that does not support extended attributes, or
refuses one, is skipped with one warning per restore; owners that were asked for and
cannot be set are an error.
"""

from __future__ import annotations

import errno
import functools
import grp
import logging
import os
import pwd
from dataclasses import dataclass

from sergas_guard.errors import BackupError

__all__ = [
    "MAX_XATTR_BYTES",
    "FileMeta",
    "MetaApplier",
    "group_name",
    "read_xattrs",
    "user_name",
]

logger = logging.getLogger(__name__)

#: Extended attribute bytes (names and values) kept per entry; Linux allows 64 KiB per
#: value, and a manifest entry must stay small.
MAX_XATTR_BYTES = 64 * 1024
_CAPABILITY = "security.capability"
# Errors meaning "this filesystem or this name cannot hold it here": skipped.
_UNSUPPORTED = frozenset(
    {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.ERANGE}
)


@functools.lru_cache(maxsize=256)
def user_name(uid: int) -> str | None:
    """The name of user ``uid`` here, or None."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


@functools.lru_cache(maxsize=256)
def group_name(gid: int) -> str | None:
    """The name of group ``gid`` here, or None."""
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None


def read_xattrs(path: int | str | os.PathLike[str]) -> tuple[tuple[str, bytes], ...]:
    """The extended attributes of ``path`` (an open descriptor, or a path whose symlink
    is never followed), in name order; empty when the filesystem has none or the file
    vanished. Attributes past :data:`MAX_XATTR_BYTES` in total are left out with a
    warning. Never raises."""
    # A descriptor is what it is; only a path could name a symlink to follow.
    follow = isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError:
        return ()
    kept: list[tuple[str, bytes]] = []
    total = 0
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=follow)
        except OSError:
            continue  # removed since listed, or not readable by us
        total += len(name) + len(value)
        if total > MAX_XATTR_BYTES:
            logger.warning(
                "extended attributes of %s past %d bytes are not backed up",
                path if isinstance(path, int) else os.fspath(path),
                MAX_XATTR_BYTES,
            )
            break
        kept.append((name, value))
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What a restore may apply to an entry besides its mode and times."""

    uid: int | None = None
    gid: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()


class MetaApplier:
    """Applies :class:`FileMeta` during one restore: owners when ``owners`` is true,
    ``user.*`` attributes always, the other namespaces when ``privileged`` (root), file
    capabilities only with ``special_bits`` too."""

    def __init__(self, *, owners: bool, privileged: bool, special_bits: bool = False) -> None:
        self.owners = owners
        self.privileged = privileged
        self.special_bits = special_bits
        self._warned = False

    def applies(self, name: str) -> bool:
        """True when this restore sets the extended attribute ``name``."""
        if name.startswith("user."):
            return True
        if name == _CAPABILITY:
            return self.privileged and self.special_bits
        return self.privileged

    def to_fd(self, fd: int, meta: FileMeta | None, relpath: str) -> None:
        """Apply ``meta`` to the open file or directory ``fd``: before its mode (a
        ``chown`` clears set-id bits) and its times. Raises BackupError when owners
        were asked for and cannot be set."""
        if meta is None:
            return
        if self.owners and meta.uid is not None and meta.gid is not None:
            try:
                os.fchown(fd, meta.uid, meta.gid)
            except OSError as exc:
                raise BackupError(
                    f"cannot set the owner of {relpath or '.'!r}: {exc.strerror or exc}"
                ) from exc
        for name, value in meta.xattrs:
            if not self.applies(name):
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._warn(relpath, name, exc)

    def to_link(self, name: str, parent: int, meta: FileMeta | None, relpath: str) -> None:
        """Apply the owner in ``meta`` to the symlink ``name`` in directory ``parent``,
        not to what it points at. Raises BackupError when it cannot be set."""
        if meta is None or not self.owners or meta.uid is None or meta.gid is None:
            return
        try:
            os.chown(name, meta.uid, meta.gid, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise BackupError(
                f"cannot set the owner of {relpath!r}: {exc.strerror or exc}"
            ) from exc

    def _warn(self, relpath: str, name: str, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "extended attribute %s of %s not restored (%s); further ones are skipped "
                "without a warning",
                name,
                relpath or ".",
                exc.strerror or exc,
            )
