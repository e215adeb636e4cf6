"""FeatureFlags: flag definitions in memory, a JSON file, or Redis shared by all workers.

Reads never touch a disk or a network on every call: the current flags are a
snapshot in memory, and at most once per ``refresh_interval`` a read checks whether
the file changed (one ``stat``) or the Redis version moved (one ``GET``). So a change
made by another worker, or an edit of the file, is seen within ``refresh_interval``
(0.5 s by default) without a restart.

Sources:

* ``FeatureFlags()``: this process only.
* ``FeatureFlags(path=...)``: loaded from and saved to a JSON file (atomic writes);
  edits to the file are picked up; a malformed file is rejected with a
  ConfigurationError at start-up, and while running it is logged and ignored, the
  last good flags staying in force (``last_error`` says why).
* ``FeatureFlags(storage=RedisStorage(...))``: Redis is the source of truth, shared by
  every worker. With a ``path`` as well, the file seeds an empty Redis and receives a
  copy of every change made through this object (a snapshot for disaster recovery);
  edits of the file are not pushed into Redis while running, since a stale file
  would overwrite newer changes made by other workers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.degradation.definitions import (
    FlagDefinition,
    FlagEvaluation,
    evaluate,
    user_id_from,
)
from sergas_guard.degradation.flag_sources import FlagSources
from sergas_guard.degradation.levels import DegradationLevel
from sergas_guard.degradation.redis_flags import is_redis_storage
from sergas_guard.errors import ConfigurationError
from sergas_guard.validation import callable_or_none, seconds, valid_name

__all__ = ["FeatureFlags", "FlagState", "FlagsListener"]

logger = logging.getLogger("sergas_guard.degradation.flags")

DEFAULT_REFRESH_INTERVAL = 0.5

FlagsListener = Callable[[frozenset[str]], None]


@dataclass(frozen=True)
class FlagState:
    """A flag's definition and whether it is active at the current degradation level."""

    definition: FlagDefinition
    level: DegradationLevel
    suppressed: bool

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: the definition plus ``suppressed`` (off because of the level)."""
        return {**self.definition.as_json(), "suppressed": self.suppressed}


class FeatureFlags:
    """Named on/off switches with allow/deny lists and sticky percentage rollout.

    ``path``: a JSON file to load from and save to. ``storage``: a ``RedisStorage`` to
    share flags between workers; a ``MemoryStorage`` or ``None`` keeps them local.
    ``level_source`` returns the current degradation level (a DegradationManager sets
    it); at DEGRADED and above only essential flags read as on. Raises
    ConfigurationError for bad arguments (``refresh_interval`` must be a finite number
    of seconds >= 0) or a malformed file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        storage: Any = None,
        *,
        namespace: str = "default",
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        level_source: Callable[[], DegradationLevel] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        refresh_interval = seconds(refresh_interval, "refresh_interval", allow_zero=True)
        valid_name(namespace, "namespace")
        callable_or_none(level_source, "level_source")
        if path is not None and not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"path must be a file path, not {path!r:.80}", field="path")
        if storage is not None and not is_redis_storage(storage) and not hasattr(storage, "decide"):
            raise ConfigurationError(
                "storage must be a RedisStorage (shared) or a MemoryStorage/None (local)",
                field="storage",
            )
        self.refresh_interval = refresh_interval
        self.level_source = level_source
        self.clock = clock
        self._sources = FlagSources(
            path, storage, namespace=namespace, refresh_interval=refresh_interval, clock=clock
        )
        self._flags: dict[str, FlagDefinition] = {}
        self._lock = threading.RLock()
        self._listeners: list[FlagsListener] = []
        self._replace(self._sources.initial())

    def __repr__(self) -> str:
        return f"FeatureFlags(source={self._sources.describe()}, flags={len(self._flags)})"

    def __contains__(self, name: object) -> bool:
        self._refresh_sync()
        return name in self._flags

    def __len__(self) -> int:
        self._refresh_sync()
        return len(self._flags)

    @property
    def shared(self) -> bool:
        """Whether the flags live in Redis, shared by every worker."""
        return self._sources.redis is not None

    @property
    def path(self) -> str | None:
        """The flags file, if any."""
        return str(self._sources.file.path) if self._sources.file else None

    @property
    def last_error(self) -> str | None:
        """Why the last look at the file or Redis failed (None when it worked)."""
        return self._sources.last_error

    # -- loading -------------------------------------------------------------------
    def _replace(self, flags: Mapping[str, FlagDefinition]) -> None:
        with self._lock:
            old = self._flags
            self._flags = dict(flags)
            changed = frozenset(
                name for name in old.keys() | flags.keys() if old.get(name) != flags.get(name)
            )
        if changed:
            self._notify(changed)

    def _refresh_sync(self, force: bool = False) -> None:
        flags = self._sources.poll_sync(self._flags, force)
        if flags is not None:
            self._replace(flags)

    async def _refresh_async(self, force: bool = False) -> None:
        flags = await self._sources.poll(self._flags, force)
        if flags is not None:
            self._replace(flags)

    def reload(self) -> None:
        """Re-read the file or Redis now.

        Raises ConfigurationError when the file or stored data is malformed, and
        StorageUnavailable when Redis cannot be reached; the flags in force stay.
        """
        flags = self._sources.reload()
        if flags is not None:
            self._replace(flags)

    async def refresh(self) -> None:
        """Check for changes now (async), whatever the refresh interval; never raises."""
        await self._refresh_async(force=True)

    # -- reading -------------------------------------------------------------------
    def _level(self) -> DegradationLevel:
        return self.level_source() if self.level_source is not None else DegradationLevel.NORMAL

    def _evaluate(
        self, name: str, user_id: object, context: Mapping[str, Any] | None, default: bool
    ) -> FlagEvaluation:
        definition = self._flags.get(name)
        return evaluate(definition, name, user_id_from(user_id, context), self._level(), default)

    def evaluate(
        self,
        name: str,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        *,
        default: bool = False,
    ) -> FlagEvaluation:
        """Whether flag ``name`` is on for this call, and why (rules: :func:`.evaluate`)."""
        self._refresh_sync()
        return self._evaluate(name, user_id, context, default)

    def is_enabled(
        self,
        name: str,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        *,
        default: bool = False,
    ) -> bool:
        """Whether flag ``name`` is on for ``user_id`` (or ``context["user_id"]``).

        An unknown flag gives ``default`` (False). Never raises for a store outage:
        the last known flags are used.
        """
        return self.evaluate(name, user_id, context, default=default).enabled

    async def evaluate_async(
        self,
        name: str,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        *,
        default: bool = False,
    ) -> FlagEvaluation:
        """Async face of :meth:`evaluate` (refreshes through the asyncio Redis client)."""
        await self._refresh_async()
        return self._evaluate(name, user_id, context, default)

    async def is_enabled_async(
        self,
        name: str,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        *,
        default: bool = False,
    ) -> bool:
        """Async face of :meth:`is_enabled`; use it on event loops with Redis storage."""
        return (await self.evaluate_async(name, user_id, context, default=default)).enabled

    def get(self, name: str) -> FlagDefinition | None:
        """The definition of ``name``, or None."""
        self._refresh_sync()
        return self._flags.get(name)

    def list_flags(self) -> list[FlagState]:
        """Every flag with its definition and whether the level suppresses it, by name."""
        self._refresh_sync()
        level = self._level()
        return [
            FlagState(d, level, level >= DegradationLevel.DEGRADED and not d.essential)
            for _, d in sorted(self._flags.items())
        ]

    def snapshot(self) -> dict[str, FlagDefinition]:
        """A copy of all definitions by name."""
        self._refresh_sync()
        return dict(self._flags)

    # -- writing -------------------------------------------------------------------
    def register(
        self,
        name: str,
        enabled: bool = True,
        description: str = "",
        rollout_percentage: float = 100.0,
        essential: bool = False,
        allow_users: tuple[str, ...] | list[str] = (),
        deny_users: tuple[str, ...] | list[str] = (),
        *,
        overwrite: bool = False,
    ) -> FlagDefinition:
        """Define flag ``name`` unless it is already defined, and return its definition.

        A definition already present (in the file, in Redis, or registered before) wins,
        so an operator's change survives a restart of code that registers defaults;
        ``overwrite=True`` replaces it. Raises ConfigurationError naming the field for
        invalid values (e.g. one string as ``allow_users``, a description over 4096
        characters, a percentage outside 0-100).
        """
        definition = FlagDefinition(
            name=name,
            enabled=enabled,
            description=description,
            rollout_percentage=rollout_percentage,
            essential=essential,
            allow_users=allow_users,  # as given: one str is refused, not split into letters
            deny_users=deny_users,
        )
        return self._modify(
            name, lambda current: definition if current is None or overwrite else current
        )

    def _modify(
        self, name: str, change: Callable[[FlagDefinition | None], FlagDefinition]
    ) -> FlagDefinition:
        """Read, change and write flag ``name`` as one step against other threads."""
        self._refresh_sync(force=self.shared)
        with self._lock:
            current = self._flags.get(name)
            definition = change(current)
            if definition != current:
                merged = {**self._flags, name: definition}
                self._sources.write_sync(merged, {name: definition})  # raises: no change
                self._replace(merged)
        return definition

    @staticmethod
    def _changer(
        name: str, changes: Mapping[str, Any], create: bool
    ) -> Callable[[FlagDefinition | None], FlagDefinition]:
        def change(current: FlagDefinition | None) -> FlagDefinition:
            if current is None:
                if not create:
                    raise KeyError(name)
                current = FlagDefinition(name=name)
            return current.with_changes(**changes)

        return change

    def update(self, name: str, *, create: bool = True, **changes: Any) -> FlagDefinition:
        """Change fields of flag ``name`` (``enabled``, ``rollout_percentage``, ...).

        An unknown flag is created with default values first, unless ``create=False``
        (then KeyError). Raises ConfigurationError for invalid values and
        StorageUnavailable when shared flags cannot be written.
        """
        return self._modify(name, self._changer(name, changes, create))

    async def update_async(
        self, name: str, *, create: bool = True, **changes: Any
    ) -> FlagDefinition:
        """Async face of :meth:`update`."""
        await self._refresh_async(force=self.shared)
        definition = self._changer(name, changes, create)(self._flags.get(name))
        merged = {**self._flags, name: definition}
        await self._sources.write(merged, {name: definition})
        with self._lock:
            self._replace({**self._flags, name: definition})
        return definition

    def enable(self, name: str) -> FlagDefinition:
        """Turn flag ``name`` on (for its rollout percentage)."""
        return self.update(name, enabled=True)

    def disable(self, name: str) -> FlagDefinition:
        """Turn flag ``name`` off for everyone."""
        return self.update(name, enabled=False)

    def set_rollout_percentage(self, name: str, percentage: float) -> FlagDefinition:
        """Roll flag ``name`` out to ``percentage`` (0-100) of user ids; 0.01 resolution."""
        return self.update(name, rollout_percentage=percentage)

    def _listing(
        self, name: str, user_id: str, listed: Literal["allow", "deny"] | None
    ) -> FlagDefinition:
        def change(current: FlagDefinition | None) -> FlagDefinition:
            if current is None:
                raise KeyError(name)
            return current.with_user_listed(str(user_id), listed)

        return self._modify(name, change)

    def allow_user(self, name: str, user_id: str) -> FlagDefinition:
        """Always turn the (enabled) flag on for ``user_id``, whatever the rollout."""
        return self._listing(name, user_id, "allow")

    def deny_user(self, name: str, user_id: str) -> FlagDefinition:
        """Always turn the flag off for ``user_id``."""
        return self._listing(name, user_id, "deny")

    def forget_user(self, name: str, user_id: str) -> FlagDefinition:
        """Remove ``user_id`` from both lists, so the rollout decides again."""
        return self._listing(name, user_id, None)

    def remove(self, name: str) -> FlagDefinition:
        """Delete flag ``name`` everywhere it is stored and return its last definition.

        Raises KeyError when it does not exist, StorageUnavailable when shared flags
        cannot be written.
        """
        self._refresh_sync(force=self.shared)
        with self._lock:
            current = self._flags.get(name)
            if current is None:
                raise KeyError(name)
            remaining = {k: v for k, v in self._flags.items() if k != name}
            self._sources.write_sync(remaining, {}, (name,))
            self._replace(remaining)
        return current

    def save(self) -> None:
        """Write all flags to the file now (atomically); raises ConfigurationError without one."""
        file = self._sources.file
        if file is None:
            raise ConfigurationError("these flags have no file to save to", field="path")
        with self._lock:
            file.save(self._flags)

    # -- settings shared beside the flags ---------------------------------------------
    def shared_setting(self, field: str) -> str | None:
        """A setting shared by every worker through Redis (None when not shared or unset).

        Raises StorageUnavailable when Redis cannot be reached.
        """
        redis = self._sources.redis
        return redis.get_setting_sync(field) if redis is not None else None

    async def shared_setting_async(self, field: str) -> str | None:
        """Async face of :meth:`shared_setting`."""
        redis = self._sources.redis
        return await redis.get_setting(field) if redis is not None else None

    def set_shared_setting(self, field: str, value: str) -> None:
        """Share a setting with every worker (a no-op when the flags are local).

        Raises StorageUnavailable when Redis cannot be reached.
        """
        if self._sources.redis is not None:
            self._sources.redis.set_setting_sync(field, value)

    # -- listeners -----------------------------------------------------------------
    def add_listener(self, listener: FlagsListener) -> None:
        """Call ``listener(names)`` whenever flags change here or are seen to change elsewhere."""
        self._listeners.append(listener)

    def remove_listener(self, listener: FlagsListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _notify(self, names: frozenset[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(names)
            except Exception:
                logger.exception("feature flag listener %r failed", listener)
