"""The repository lock: ``fcntl.flock`` on ``locks/repository``.

Backups and restores hold it shared, garbage collection exclusive, so collection never
runs while a backup has written chunks that no manifest names yet. The kernel releases
a ``flock`` when its holder dies, so a ``kill -9`` never leaves a stale lock behind
(restic's and borg's most common complaint). The lock belongs to an open file
description: two holders in one process exclude each other like two processes do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sergas_guard.errors import BackupError

__all__ = ["LOCK_FILE", "hold_lock"]

LOCK_FILE = "repository"
_POLL_SECONDS = 0.05


@contextlib.contextmanager
def hold_lock(locks_dir: Path, *, exclusive: bool, timeout: float | None = None) -> Iterator[None]:
    """Hold the repository lock (shared or exclusive) for the ``with`` block.

    ``timeout`` None waits as long as needed. Raises BackupError when the lock is not
    obtained within ``timeout`` seconds, or the lock file cannot be opened.
    """
    try:
        fd = os.open(locks_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot open the repository lock in {locks_dir}: {exc}") from exc
    try:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if timeout is None:
            fcntl.flock(fd, operation)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        kind = "exclusive" if exclusive else "shared"
                        raise BackupError(
                            f"the repository is locked by another operation; no {kind} lock "
                            f"within {timeout:g}s"
                        ) from None
                    time.sleep(_POLL_SECONDS)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(fd)
