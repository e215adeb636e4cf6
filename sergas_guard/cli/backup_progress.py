"""Progress bars (bytes, files, throughput) for ``sergas-guard backup`` on a terminal.

The manager has no progress callback, so progress is observed from the outside through
public interfaces: a backup through the strategy protocol (the walk asks the strategy's
``exclude`` about every entry just before reading it), a restore by watching the bytes
appear under the destination. Both are displays only; nothing depends on them.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from sergas_guard.recovery.strategy import BackupStrategy

__all__ = ["BackupProgress", "ProgressStrategy", "progress_bar", "tree_size", "watch_tree"]


def progress_bar(console: Console) -> Progress:
    """A bar showing bytes done of total, files, throughput and elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[files]} files"),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class BackupProgress:
    """Counts the files and bytes a backup has read into ``task`` of ``progress``."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._lock = threading.Lock()
        self._files = 0
        self._done = 0
        self._pending = 0

    def entry(self, path: Path) -> None:
        """The walk reached ``path``: the file before it has been read."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        with self._lock:
            self._done += self._pending
            self._pending = st.st_size if stat.S_ISREG(st.st_mode) else 0
            self._files += stat.S_ISREG(st.st_mode)
            self._progress.update(self._task, completed=self._done, files=self._files)

    def finish(self) -> None:
        """The backup is written: count the last file too."""
        with self._lock:
            self._done += self._pending
            self._pending = 0
            self._progress.update(
                self._task, completed=self._done, total=self._done, files=self._files
            )

    def set_total(self, total: int) -> None:
        """The pre-scan's estimate of the bytes to read."""
        self._progress.update(self._task, total=max(total, self._done))


class ProgressStrategy:
    """``inner`` with every entry the walk visits reported to ``progress``.

    Forwards the BackupStrategy protocol (and ``one_file_system``) unchanged, so the
    backup it makes is the one ``inner`` would make.
    """

    def __init__(self, inner: BackupStrategy, progress: BackupProgress) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.compress = inner.compress
        self.restores_in_place = inner.restores_in_place
        self.one_file_system = getattr(inner, "one_file_system", False) is True
        self._progress = progress
        self._root: Path | None = None

    async def stage(self, source: str, staging: Path) -> Path:
        """What ``inner`` stages; a thread starts estimating its size for the bar."""
        root = await self.inner.stage(source, staging)
        self._root = None if root.is_file() else root
        if self._root is None:
            # A single-file source is the whole backup; the walk asks no questions.
            self._progress.entry(root)
        threading.Thread(
            target=lambda: self._progress.set_total(tree_size(root, self.inner.exclude)[0]),
            daemon=True,
        ).start()
        return root

    def exclude(self, relative_path: str) -> bool:
        """``inner``'s answer; an entry kept is reported to the bar."""
        excluded = self.inner.exclude(relative_path)
        if not excluded and self._root is not None:
            self._progress.entry(self._root / relative_path)
        return excluded

    async def finish_restore(self, restored: Path, destination: str) -> None:
        """What ``inner`` does."""
        await self.inner.finish_restore(restored, destination)


def tree_size(root: Path, exclude: Callable[[str], bool] | None = None) -> tuple[int, int]:
    """``(bytes, files)`` of the regular files under ``root`` (links not followed); an
    estimate: unreadable directories count as empty. ``exclude(relpath)`` prunes."""
    skip = exclude or (lambda _: False)
    try:
        if root.is_file():
            return root.stat().st_size, 1
    except OSError:
        return 0, 0
    total = files = 0
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if skip(relative):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), f"{relative}/"))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except OSError:
                continue
    return total, files


@contextmanager
def watch_tree(
    progress: Progress, task: TaskID, root: Path, interval: float = 0.5
) -> Iterator[None]:
    """While inside, a thread updates ``task`` with the bytes written under ``root``
    (beyond what was there at the start)."""
    base_bytes, base_files = tree_size(root)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            done, files = tree_size(root)
            progress.update(
                task, completed=max(0, done - base_bytes), files=max(0, files - base_files)
            )

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
