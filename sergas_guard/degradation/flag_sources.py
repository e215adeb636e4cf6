"""Where FeatureFlags come from and go to: nothing, a JSON file, Redis, or Redis and a file.

:class:`FlagSources` knows when to look again (``refresh_interval``), what changed,
and what went wrong (``last_error``); it never raises on a read refresh, so a broken
file or an unreachable Redis leaves the flags in force. With Redis, Redis is the
source of truth and a file only seeds an empty Redis and keeps a copy (see
:mod:`.flags`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from sergas_guard.clock import Clock
from sergas_guard.degradation.definitions import FlagDefinition
from sergas_guard.degradation.flag_file import FlagFile
from sergas_guard.degradation.redis_flags import RedisFlagStore, is_redis_storage
from sergas_guard.errors import ConfigurationError, StorageUnavailable

__all__ = ["FlagSources"]

logger = logging.getLogger("sergas_guard.degradation.flags")

Flags = dict[str, FlagDefinition]


class FlagSources:
    """The file and/or Redis store behind one FeatureFlags, and the bookkeeping of both."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        storage: Any,
        *,
        namespace: str,
        refresh_interval: float,
        clock: Clock,
    ) -> None:
        self.file = FlagFile(path) if path is not None else None
        self.redis = RedisFlagStore(storage, namespace) if is_redis_storage(storage) else None
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.last_error: str | None = None
        self._redis_version = -1
        self._next_check = 0.0
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``redis``, the file's path, or ``memory``."""
        return "redis" if self.redis else (str(self.file.path) if self.file else "memory")

    def note_error(self, message: str) -> None:
        """Remember (and log once) why the last look at a source failed."""
        if message != self.last_error:
            logger.error("feature flags: %s", message)
        self.last_error = message

    # -- reading -------------------------------------------------------------------
    def initial(self) -> Flags:
        """The flags to start with. Raises ConfigurationError for a malformed file; an
        unreachable Redis is logged and retried at the next refresh."""
        file_flags = self.file.load() if self.file else None
        if self.redis is None:
            return file_flags or {}
        try:
            version, flags = self.redis.load_sync()
            if not flags and file_flags:
                version, flags = self.redis.put_sync(file_flags.values()), dict(file_flags)
            self._redis_version = version
            return flags
        except StorageUnavailable as exc:
            self.note_error(f"{exc}; using {'the file' if file_flags else 'no'} flags meanwhile")
            return file_flags or {}

    def _due(self, force: bool) -> bool:
        now = self.clock.monotonic()
        if not force and now < self._next_check:
            return False  # the common case, decided without taking the lock
        with self._lock:
            if not force and now < self._next_check:
                return False
            self._next_check = now + self.refresh_interval
            return True

    def _from_file(self) -> Flags | None:
        # With Redis the file is only a seed and a copy.
        if self.file is None or self.redis is not None or not self.file.changed():
            return None
        try:
            flags = self.file.load()
        except ConfigurationError as exc:
            self.note_error(f"{exc}; keeping the last good flags")
            return None
        if flags is not None:  # a deleted file does not delete the flags in force
            self.last_error = None
        return flags

    def _lost_by_redis(self, version: int, flags: Flags, current: Mapping[str, Any]) -> bool:
        # The version only ever grows: 0 after a known version means the keys vanished
        # (restart without persistence, flush), not that an operator removed the flags.
        return version == 0 and not flags and self._redis_version > 0 and bool(current)

    def poll_sync(self, current: Mapping[str, FlagDefinition], force: bool = False) -> Flags | None:
        """New flags when a source changed since the last look (at most one look per
        ``refresh_interval`` unless ``force``), else None. Never raises."""
        if not self._due(force):
            return None
        if self.redis is None:
            return self._from_file()
        try:
            if not force and self.redis.version_sync() == self._redis_version:
                self.last_error = None
                return None
            version, flags = self.redis.load_sync()
            if self._lost_by_redis(version, flags, current):
                logger.warning("feature flags: Redis lost the flags; restoring them")
                version, flags = self.redis.put_sync(current.values()), dict(current)
        except (StorageUnavailable, ConfigurationError) as exc:
            self.note_error(f"{exc}; keeping the last good flags")
            return None
        self._redis_version, self.last_error = version, None
        return flags

    async def poll(
        self, current: Mapping[str, FlagDefinition], force: bool = False
    ) -> Flags | None:
        """Async face of :meth:`poll_sync`."""
        if not self._due(force):
            return None
        if self.redis is None:
            return self._from_file()
        try:
            if not force and await self.redis.version() == self._redis_version:
                self.last_error = None
                return None
            version, flags = await self.redis.load()
            if self._lost_by_redis(version, flags, current):
                logger.warning("feature flags: Redis lost the flags; restoring them")
                version, flags = await self.redis.put(current.values()), dict(current)
        except (StorageUnavailable, ConfigurationError) as exc:
            self.note_error(f"{exc}; keeping the last good flags")
            return None
        self._redis_version, self.last_error = version, None
        return flags

    def reload(self) -> Flags | None:
        """Re-read now; raises ConfigurationError (malformed) or StorageUnavailable."""
        if self.redis is not None:
            version, flags = self.redis.load_sync()
            self._redis_version, self.last_error = version, None
            return flags
        if self.file is None:
            return None
        self.file.signature = None
        loaded = self.file.load()
        self.last_error = None
        return loaded

    # -- writing -------------------------------------------------------------------
    def _written_to_redis(self, version: int, merged: Mapping[str, FlagDefinition]) -> None:
        with self._lock:
            if version == self._redis_version + 1:
                self._redis_version = version  # nobody else wrote in between
            else:
                self._next_check = 0.0  # others wrote too: re-read at the next call
        if self.file is not None:
            try:
                self.file.save(merged)
            except ConfigurationError as exc:
                self.note_error(f"{exc}; the change is in Redis but not in the file copy")

    def write_sync(
        self, merged: Mapping[str, FlagDefinition], changed: Flags, removed: tuple[str, ...] = ()
    ) -> None:
        """Persist a change (``merged`` is every flag after it). Raises ConfigurationError
        when the file cannot be written, StorageUnavailable when Redis cannot."""
        if self.redis is not None:
            self._written_to_redis(self.redis.put_sync(changed.values(), removed), merged)
        elif self.file is not None:
            self.file.save(merged)

    async def write(
        self, merged: Mapping[str, FlagDefinition], changed: Flags, removed: tuple[str, ...] = ()
    ) -> None:
        """Async face of :meth:`write_sync` (a file write is done inline: it is small)."""
        if self.redis is not None:
            self._written_to_redis(await self.redis.put(changed.values(), removed), merged)
        elif self.file is not None:
            self.file.save(merged)
