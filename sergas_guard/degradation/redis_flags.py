"""Flags in Redis, shared by every worker: one hash of definitions and a version counter.

Writers ``HSET`` the definition and then ``INCR`` the version; readers ``GET`` the
version (one cheap round trip per refresh) and re-read the hash only when it moved.
A reader that fetches the hash between a writer's two commands gets the newer data
under the older version and simply reads once more next time, so no transaction is
needed. Both keys share a ``{hash tag}`` so they live on one Redis Cluster slot.
Flag keys carry no TTL: they are configuration, not traffic state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sergas_guard.degradation.definitions import FlagDefinition
from sergas_guard.errors import ConfigurationError, StorageUnavailable
from sergas_guard.secrets import scrub, secrets_of

__all__ = ["RedisFlagStore", "is_redis_storage"]


def is_redis_storage(storage: object) -> bool:
    """Whether ``storage`` looks like a RedisStorage (has clients and a key prefix).

    The clients are looked up on the class: reading them builds them, and a cluster
    client connects as it is built (and raises when it cannot). A FailoverStorage
    counts as the storage it guards.
    """
    inner = getattr(storage, "primary", storage)
    has_clients = all(hasattr(type(inner), attr) for attr in ("client", "sync_client"))
    return has_clients and hasattr(inner, "key_prefix")


def _decode(raw: dict[Any, Any]) -> dict[str, FlagDefinition]:
    flags: dict[str, FlagDefinition] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            body = json.loads(value)
        except ValueError:
            raise ConfigurationError(
                f"flag {name!r} in Redis is not valid JSON", field=name
            ) from None
        if not isinstance(body, dict):
            raise ConfigurationError(f"flag {name!r} in Redis is not a JSON object", field=name)
        flags[name] = FlagDefinition.validate_mapping({**body, "name": name})
    return flags


def _encode(definition: FlagDefinition) -> str:
    return json.dumps(definition.as_json(), sort_keys=True)


def _unavailable(exc: Exception, storage: Any) -> StorageUnavailable:
    message = scrub(str(exc), *secrets_of(storage))
    return StorageUnavailable(f"flag store in Redis is unavailable: {message}")


def _version(raw: Any) -> int:
    return int(raw) if raw is not None else 0


class RedisFlagStore:
    """Sync and async access to the shared flag hash of one namespace."""

    def __init__(self, storage: Any, namespace: str = "default") -> None:
        self.storage = storage
        tag = f"{{flags:{namespace}}}"
        self.defs_key = f"{storage.key_prefix}:{tag}:defs"
        self.version_key = f"{storage.key_prefix}:{tag}:version"
        self.settings_key = f"{storage.key_prefix}:{tag}:settings"

    # -- sync face -----------------------------------------------------------------
    def version_sync(self) -> int:
        """The current version (0 when nothing was ever written); raises StorageUnavailable."""
        try:
            return _version(self.storage.sync_client.get(self.version_key))
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc

    def load_sync(self) -> tuple[int, dict[str, FlagDefinition]]:
        """(version, flags); the version is read first so a racing write is re-read later."""
        try:
            client = self.storage.sync_client
            version = _version(client.get(self.version_key))
            raw = client.hgetall(self.defs_key)
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc
        return version, _decode(raw)

    def put_sync(self, definitions: Iterable[FlagDefinition], removed: Iterable[str] = ()) -> int:
        """Store definitions, delete ``removed`` names, bump the version; returns it."""
        mapping = {d.name: _encode(d) for d in definitions}
        gone = list(removed)
        try:
            client = self.storage.sync_client
            if mapping:
                client.hset(self.defs_key, mapping=mapping)
            if gone:
                client.hdel(self.defs_key, *gone)
            return int(client.incr(self.version_key))
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc

    def get_setting_sync(self, field: str) -> str | None:
        """A shared setting beside the flags (e.g. the operator's degradation level)."""
        try:
            value = self.storage.sync_client.hget(self.settings_key, field)
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc
        return value.decode() if isinstance(value, bytes) else value

    def set_setting_sync(self, field: str, value: str) -> None:
        """Store a shared setting; raises StorageUnavailable."""
        try:
            self.storage.sync_client.hset(self.settings_key, field, value)
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc

    # -- async face ----------------------------------------------------------------
    async def version(self) -> int:
        """Async face of :meth:`version_sync`."""
        try:
            return _version(await self.storage.client.get(self.version_key))
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc

    async def load(self) -> tuple[int, dict[str, FlagDefinition]]:
        """Async face of :meth:`load_sync`."""
        try:
            client = self.storage.client
            version = _version(await client.get(self.version_key))
            raw = await client.hgetall(self.defs_key)
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc
        return version, _decode(raw)

    async def put(self, definitions: Iterable[FlagDefinition], removed: Iterable[str] = ()) -> int:
        """Async face of :meth:`put_sync`."""
        mapping = {d.name: _encode(d) for d in definitions}
        gone = list(removed)
        try:
            client = self.storage.client
            if mapping:
                await client.hset(self.defs_key, mapping=mapping)
            if gone:
                await client.hdel(self.defs_key, *gone)
            return int(await client.incr(self.version_key))
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc

    async def get_setting(self, field: str) -> str | None:
        """Async face of :meth:`get_setting_sync`."""
        try:
            value = await self.storage.client.hget(self.settings_key, field)
        except Exception as exc:
            raise _unavailable(exc, self.storage) from exc
        return value.decode() if isinstance(value, bytes) else value
