"""Flags in Redis, shared by every worker: one hash of definitions and a version counter.

Each operation is one small Lua script run through the storage's one Redis backend
(:class:`~sergas_guard.redis.runner.ScriptRunner`: a server, Sentinel's master or a
cluster, one error translation). Writers set and delete definitions and bump the
version in one script, atomically; readers read the version (one cheap round trip per
refresh) and re-read the hash, with the version, only when it moved. The keys share a
``{hash tag}`` so they live on one Redis Cluster slot. Flag keys carry no TTL: they are
configuration, not traffic state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sergas_guard.degradation.definitions import FlagDefinition
from sergas_guard.errors import ConfigurationError, StorageError, StorageUnavailable
from sergas_guard.redis.runner import ScriptRunner
from sergas_guard.redis.scripts import Script, ScriptArg

__all__ = ["RedisFlagStore", "is_redis_storage"]

# KEYS: version. The version, 0 before the first write.
VERSION = Script("return tonumber(redis.call('GET', KEYS[1]) or '0') or 0")
# KEYS: version, defs. {version, {name, json, name, json, ...}}, read together.
LOAD = Script(
    "return {tonumber(redis.call('GET', KEYS[1]) or '0') or 0, redis.call('HGETALL', KEYS[2])}"
)
# KEYS: version, defs; ARGV: n, then n (name, json) pairs, then names to delete. The
# new version. One field per call: no unpack() of a long list (Lua's stack is bounded).
PUT = Script("""
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
return redis.call('INCR', KEYS[1])
""")
# KEYS: settings; ARGV: field [, value]. Reads the field, or sets it when given a value.
SETTING = Script("""
if #ARGV > 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return redis.call('HGET', KEYS[1], ARGV[1])
""")


def is_redis_storage(storage: object) -> bool:
    """Whether ``storage`` keeps state in Redis (a RedisStorage, any ScriptRunner).

    A FailoverStorage counts as the storage it guards. Nothing is built or connected.
    """
    return isinstance(_runner_of(storage), ScriptRunner)


def _runner_of(storage: object) -> Any:
    return getattr(storage, "primary", storage)


def _decode(raw: Sequence[Any]) -> dict[str, FlagDefinition]:
    flags: dict[str, FlagDefinition] = {}
    for field, value in zip(raw[::2], raw[1::2], strict=True):
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


def _put_args(definitions: Iterable[FlagDefinition], removed: Iterable[str]) -> list[ScriptArg]:
    pairs = [(d.name, _encode(d)) for d in definitions]
    return [len(pairs), *(part for pair in pairs for part in pair), *removed]


def _unavailable(error: StorageError) -> StorageUnavailable:
    # Messages come scrubbed from the backend. An error reply too means "no flags from
    # Redis now": the flags keep their last known state.
    return StorageUnavailable(f"flag store in Redis is unavailable: {error}")


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisFlagStore:
    """Sync and async access to the shared flag hash of one namespace.

    ``storage`` is a RedisStorage (or a FailoverStorage guarding one). Every method
    raises StorageUnavailable when Redis fails.
    """

    def __init__(self, storage: Any, namespace: str = "default") -> None:
        self.storage = storage
        self._runner: ScriptRunner = _runner_of(storage)
        tag = f"{{flags:{namespace}}}"
        prefix = self._runner.key_prefix
        self.defs_key = f"{prefix}:{tag}:defs"
        self.version_key = f"{prefix}:{tag}:version"
        self.settings_key = f"{prefix}:{tag}:settings"

    def _run_sync(self, script: Script, keys: list[str], args: list[ScriptArg]) -> Any:
        try:
            return self._runner.run_script_sync(script, keys, args, "flag store")
        except StorageError as error:
            raise _unavailable(error) from error

    async def _run(self, script: Script, keys: list[str], args: list[ScriptArg]) -> Any:
        try:
            return await self._runner.run_script(script, keys, args, "flag store")
        except StorageError as error:
            raise _unavailable(error) from error

    # -- sync face -----------------------------------------------------------------
    def version_sync(self) -> int:
        """The current version (0 when nothing was ever written)."""
        return int(self._run_sync(VERSION, [self.version_key], []))

    def load_sync(self) -> tuple[int, dict[str, FlagDefinition]]:
        """(version, flags), read together. Raises ConfigurationError for a definition in
        Redis that is not a valid flag."""
        version, raw = self._run_sync(LOAD, [self.version_key, self.defs_key], [])
        return int(version), _decode(raw)

    def put_sync(self, definitions: Iterable[FlagDefinition], removed: Iterable[str] = ()) -> int:
        """Store definitions, delete ``removed`` names, bump the version (atomically);
        returns the new version."""
        args = _put_args(definitions, removed)
        return int(self._run_sync(PUT, [self.version_key, self.defs_key], args))

    def get_setting_sync(self, field: str) -> str | None:
        """A shared setting beside the flags (e.g. the operator's degradation level)."""
        return _text(self._run_sync(SETTING, [self.settings_key], [field]))

    def set_setting_sync(self, field: str, value: str) -> None:
        """Store a shared setting."""
        self._run_sync(SETTING, [self.settings_key], [field, value])

    # -- async face ----------------------------------------------------------------
    async def version(self) -> int:
        """Async face of :meth:`version_sync`."""
        return int(await self._run(VERSION, [self.version_key], []))

    async def load(self) -> tuple[int, dict[str, FlagDefinition]]:
        """Async face of :meth:`load_sync`."""
        version, raw = await self._run(LOAD, [self.version_key, self.defs_key], [])
        return int(version), _decode(raw)

    async def put(self, definitions: Iterable[FlagDefinition], removed: Iterable[str] = ()) -> int:
        """Async face of :meth:`put_sync`."""
        args = _put_args(definitions, removed)
        return int(await self._run(PUT, [self.version_key, self.defs_key], args))

    async def get_setting(self, field: str) -> str | None:
        """Async face of :meth:`get_setting_sync`."""
        return _text(await self._run(SETTING, [self.settings_key], [field]))
