"""Decoding a restore's chunks ahead of the writer, on a thread pool, in manifest order.

Reading a chunk back costs a pack read, AES-GCM, zstd, the HMAC of its id and the
SHA-256 of its file: about as long as writing it, and each of those releases the GIL on
large buffers. :class:`ReadAhead` walks the manifest's entries ahead of the caller and
hands the chunks to worker threads, so the next files are decoded while the caller writes
one:

* Order. The caller gets the entries in manifest order and each file's chunks in order,
  from a window of slots (an entry, or one chunk of a job handed to the workers) filled at
  the back and emptied at the front: nothing is reordered, so a later entry for a name
  still wins.
* One read per run. Chunks lying next to each other in one pack (the files of a directory
  backed up together usually do) are read with one ``pread`` and decoded by one job, up to
  4 MiB of blobs; each chunk is still checked on its own (seal, id), so a damaged chunk
  fails only the files that use it.
* Bounded memory. The window is topped up while it holds less than ``budget`` bytes of
  plaintext not yet handed to the caller (so at most the budget plus one chunk) and fewer
  than 4096 slots, whatever the size of the backup; entries are taken from the manifest
  one at a time as the window has room. At worst memory holds that much decoded data plus
  the blobs of the runs being read (at most 4 MiB plus one chunk per worker).
* Checked content. A file's content raises IntegrityError naming the file when a chunk is
  missing or damaged, or (after its last chunk) when the file does not have its recorded
  size and SHA-256, so the restore target never publishes it. A file of one chunk (most
  small files) is hashed by the worker that decoded it; the chunks of a larger file are
  hashed in order by one more thread while the caller writes them (at most 8 MiB of them
  waiting), so the caller's thread only writes.

A job covering the back of the window is handed to the workers once it cannot grow (the
next chunk lies elsewhere, or it is 4 MiB) or when the caller reaches it.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from sergas_guard.errors import BackupError, ConfigurationError, IntegrityError
from sergas_guard.recovery.manifest import Entry
from sergas_guard.recovery.packs import PackEntry

if TYPE_CHECKING:
    from sergas_guard.recovery.repository import Repository

__all__ = ["DEFAULT_BUDGET", "ReadAhead", "default_workers"]

#: Plaintext bytes decoded (or being decoded) ahead of the caller, by default.
DEFAULT_BUDGET = 16 * 1024 * 1024
# Adjacent blobs of one pack are read together up to this many bytes.
_RUN_BYTES = 4 * 1024 * 1024
# Chunks of a large file handed to the caller but not yet hashed, at most (plus one).
_HASH_QUEUE_BYTES = 8 * 1024 * 1024
# Entries and chunks in the window at most: a long stretch of directories and tiny files
# costs slots, not bytes.
_MAX_SLOTS = 4096

# A decoded chunk (with its SHA-256 when it is a whole file), or why it is unusable.
_Decoded = tuple[bytes, str | None] | IntegrityError


def default_workers() -> int:
    """Decoding threads: one per core, and at least two, so that one reads a pack while
    another decodes."""
    return max(2, os.cpu_count() or 1)


class _Job:
    """Adjacent blobs of one pack, read with one ``pread`` and decoded by one worker."""

    __slots__ = ("blobs", "end", "future", "length", "pack_id", "whole")

    def __init__(self, pack_id: str, offset: int) -> None:
        self.pack_id = pack_id
        self.blobs: list[PackEntry] = []
        # Per blob: it is a whole file's only chunk, so the worker hashes it too.
        self.whole: list[bool] = []
        self.end = offset
        self.length = 0
        self.future: Future[list[_Decoded | None]] | None = None

    def add(self, blob: PackEntry, whole: bool) -> int:
        """Append ``blob`` (which starts at :attr:`end`); its index in the job."""
        self.blobs.append(blob)
        self.whole.append(whole)
        self.end = blob.offset + blob.length
        self.length += blob.length
        return len(self.blobs) - 1


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One chunk of a file in the window: where its job puts it, or why it has none."""

    job: _Job | None
    index: int
    size: int
    error: IntegrityError | None = None


def _decode(repo: Repository, job: _Job) -> list[_Decoded | None]:
    """Run in a worker: read and decode the job's blobs."""
    try:
        plain = repo.read_run(job.pack_id, job.blobs)
    except IntegrityError as exc:
        return [exc] * len(job.blobs)
    decoded: list[_Decoded | None] = []
    for data, whole in zip(plain, job.whole, strict=True):
        if isinstance(data, IntegrityError):
            decoded.append(data)
        else:
            decoded.append((data, hashlib.sha256(data).hexdigest() if whole else None))
    return decoded


class _OrderedDigest:
    """SHA-256 of a file's chunks, updated on the one hashing thread in the order given,
    while the caller goes on writing them."""

    def __init__(self, hasher: ThreadPoolExecutor) -> None:
        self._hasher = hasher
        self._digest = hashlib.sha256()
        self._queued: deque[tuple[Future[None], int]] = deque()
        self._queued_bytes = 0

    def update(self, data: bytes) -> None:
        while self._queued and self._queued_bytes > _HASH_QUEUE_BYTES:
            done, size = self._queued.popleft()
            done.result()
            self._queued_bytes -= size
        self._queued.append((self._hasher.submit(self._digest.update, data), len(data)))
        self._queued_bytes += len(data)

    def hexdigest(self) -> str:
        for done, _ in self._queued:
            done.result()
        self._queued.clear()
        return self._digest.hexdigest()


class ReadAhead:
    """Entries of one backup with their contents, decoded ahead by ``workers`` threads
    within ``budget`` bytes; see the module docstring. Use it as a context manager (the
    workers stop on exit) from one thread.

    Raises ConfigurationError for ``workers`` or ``budget`` below 1.
    """

    def __init__(
        self,
        repo: Repository,
        backup_id: str,
        *,
        workers: int | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        count = default_workers() if workers is None else workers
        if count < 1:
            raise ConfigurationError("workers must be at least 1", field="workers")
        if budget < 1:
            raise ConfigurationError("budget must be at least 1 byte", field="budget")
        self._repo = repo
        self._backup_id = backup_id
        self._budget = budget
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="sergas-read-ahead")
        # One thread: the updates of a file's digest must run in order.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sergas-restore-hash")
        self._window: deque[Entry | _Chunk] = deque()
        #: Plaintext bytes of the chunks in the window (decoded, being decoded or planned).
        self.ahead_bytes = 0
        #: The most :attr:`ahead_bytes` ever reached (what the budget bounds).
        self.peak_ahead_bytes = 0
        self._open: _Job | None = None
        # Counts the entries handed out: a content is only readable during its turn.
        self._turn = 0

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop: jobs not started are dropped, running ones finish (they read packs, which
        the caller's repository lock protects only until it returns)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True, cancel_futures=True)
        self._window.clear()
        self._open = None
        self.ahead_bytes = 0

    def entries(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Iterator[bytes]]]:
        """Each of ``entries`` in order, with its content: the file's plaintext chunk by
        chunk (empty for a directory or symlink), read from ``entries`` lazily.

        The content must be read before the next entry is asked for (what is left of it
        is skipped; reading it later raises RuntimeError). It raises IntegrityError
        naming the file for a missing or damaged chunk, or after the last chunk when the
        file does not match its recorded size and SHA-256; BackupError when a pack
        cannot be read.
        """
        plan = self._plan(iter(entries))
        while True:
            slot = self._next(plan)
            if slot is None:
                return
            if isinstance(slot, _Chunk):
                # Left over from a file whose content the caller did not finish.
                self._release(slot)
                continue
            self._turn += 1
            yield slot, self._content(slot, plan, self._turn) if slot.type == "file" else iter(())

    # -- the window ------------------------------------------------------------------

    def _plan(self, entries: Iterator[Entry]) -> Iterator[Entry | _Chunk]:
        """Every entry followed by its chunks, grouping adjacent blobs into jobs."""
        for entry in entries:
            yield entry
            if entry.type != "file":
                continue
            whole = len(entry.chunks) == 1
            for cid in entry.chunks:
                try:
                    location = self._repo.locate(cid)
                except IntegrityError as exc:
                    yield _Chunk(None, 0, 0, exc)
                    continue
                blob = location.entry
                job = self._open
                if (
                    job is None
                    or job.pack_id != location.pack_id
                    or job.end != blob.offset
                    or job.length >= _RUN_BYTES
                ):
                    self._submit_open()
                    job = self._open = _Job(location.pack_id, blob.offset)
                yield _Chunk(job, job.add(blob, whole), blob.size)
        self._submit_open()

    def _submit_open(self) -> None:
        job, self._open = self._open, None
        if job is not None:
            job.future = self._pool.submit(_decode, self._repo, job)

    def _next(self, plan: Iterator[Entry | _Chunk]) -> Entry | _Chunk | None:
        """The front slot of the window (None at the end), after topping the window up."""
        window = self._window
        while not window or (self.ahead_bytes < self._budget and len(window) < _MAX_SLOTS):
            slot = next(plan, None)
            if slot is None:
                break
            window.append(slot)
            if isinstance(slot, _Chunk):
                self.ahead_bytes += slot.size
        self.peak_ahead_bytes = max(self.peak_ahead_bytes, self.ahead_bytes)
        return window.popleft() if window else None

    def _release(self, slot: _Chunk) -> _Decoded | None:
        """Take ``slot``'s result out of its job (waiting for it) and free its budget."""
        self.ahead_bytes -= slot.size
        job = slot.job
        if job is None:
            return slot.error
        if job.future is None:
            self._submit_open()  # the caller caught up with the job still growing
        assert job.future is not None
        results = job.future.result()
        decoded, results[slot.index] = results[slot.index], None
        return decoded

    def _content(self, entry: Entry, plan: Iterator[Entry | _Chunk], turn: int) -> Iterator[bytes]:
        digest = _OrderedDigest(self._hasher) if len(entry.chunks) != 1 else None
        whole: str | None = None
        size = 0
        for _ in entry.chunks:
            if turn != self._turn:
                raise RuntimeError(f"the content of {entry.path!r} was read after the next entry")
            slot = self._next(plan)
            assert isinstance(slot, _Chunk), "a file's chunks follow it in the window"
            try:
                decoded = self._release(slot)
            except OSError as exc:
                raise BackupError(
                    f"reading file {entry.path!r} of backup {self._backup_id!r}"
                    f" from the repository failed: {exc.strerror or exc}"
                ) from exc
            if isinstance(decoded, IntegrityError) or decoded is None:
                raise IntegrityError(
                    f"file {entry.path!r} of backup {self._backup_id!r}: {decoded}"
                )
            data, chunk_digest = decoded
            if digest is not None:
                digest.update(data)
            elif chunk_digest is not None:
                whole = chunk_digest
            size += len(data)
            yield data
        actual = digest.hexdigest() if digest is not None else whole
        if size != entry.size or actual != entry.sha256:
            raise IntegrityError(
                f"file {entry.path!r} of backup {self._backup_id!r} does not match its"
                " recorded hash"
            )
