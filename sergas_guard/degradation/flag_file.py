"""The flags JSON file: atomic writes and change detection.

A write goes to a temporary file in the same directory, is flushed and fsynced, and
then renamed over the old file (``os.replace`` is atomic on POSIX), after which the
directory is fsynced so the rename itself survives a power cut. A process that dies
before the rename leaves the old file whole; readers never see half a document.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from sergas_guard.degradation.definitions import FlagDefinition, dump_document, parse_document
from sergas_guard.errors import ConfigurationError

__all__ = ["FileSignature", "FlagFile", "atomic_write"]

# (device, inode, size, mtime in ns): a rename, a rewrite or a touch all change it.
FileSignature = tuple[int, int, int, int]


def atomic_write(
    path: Path, data: bytes, *, before_replace: Callable[[Path], None] | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir).

    ``before_replace`` runs with the temporary file's path after it is durable and
    before the rename (tests use it to crash there). Raises ``OSError`` on I/O errors.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            # Keep the permissions an operator gave the file, not mkstemp's 0600.
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_signature(path: Path) -> FileSignature | None:
    """What identifies the file's current content cheaply; ``None`` when it does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class FlagFile:
    """One flags file: load it, save it atomically, and tell whether it changed since."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigurationError(f"{self.path} is a directory, not a flags file", field="path")
        # The signature of the content last loaded or written by us, or last rejected:
        # a rejected file is not parsed again until it changes.
        self.signature: FileSignature | None = None

    def changed(self) -> bool:
        """Whether the file differs from what was last loaded, saved or rejected."""
        return file_signature(self.path) != self.signature

    def load(self) -> dict[str, FlagDefinition] | None:
        """Parse the file; ``None`` when it does not exist.

        Raises ConfigurationError when it is malformed (and remembers it as seen).
        """
        signature = file_signature(self.path)
        if signature is None:
            self.signature = None
            return None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read flags file {self.path}: {exc}") from None
        # Stat again after reading: a writer may have replaced the file in between.
        signature = file_signature(self.path)
        self.signature = signature
        return parse_document(data, f"flags file {self.path}")

    def save(
        self,
        flags: Mapping[str, FlagDefinition],
        *,
        before_replace: Callable[[Path], None] | None = None,
    ) -> None:
        """Write all flags atomically; raises ConfigurationError when the file cannot be written."""
        try:
            atomic_write(self.path, dump_document(flags), before_replace=before_replace)
        except OSError as exc:
            raise ConfigurationError(f"cannot write flags file {self.path}: {exc}") from None
        self.signature = file_signature(self.path)
