"""What a capability needs of a Redis storage to keep its state there: scripts to run.

Breakers and flags depend on this protocol, not on the rate-limit storage class that
implements it (:class:`~sergas_guard.storage.RedisStorage`), so importing them loads no
rate limiter and no driver, and the packages do not import each other.
:func:`run_script_on` / :func:`run_script_on_sync` are the one dispatch of a script
over our clients (a single server or Sentinel's master, or a cluster's slot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sergas_guard.errors import ConfigurationError, StorageError
from sergas_guard.redis.client import RedisClient, SyncRedisClient
from sergas_guard.redis.cluster import AsyncClusterClient, SyncClusterClient, key_slot
from sergas_guard.redis.errors import from_exception
from sergas_guard.redis.scripts import Script, ScriptArg

__all__ = ["ScriptRunner", "run_script_on", "run_script_on_sync", "script_slot"]


@runtime_checkable
class ScriptRunner(Protocol):
    """Runs Lua scripts on a Redis deployment (single server, Sentinel or Cluster).

    Implementations translate every failure into one error tree: StorageUnavailable when
    Redis cannot answer, StorageError for an error reply, ConfigurationError for keys of
    different cluster slots; and never retry a call that may have run.
    """

    #: The namespace every key of this deployment's users starts with.
    key_prefix: str
    is_cluster: bool

    def secrets(self) -> tuple[str, ...]:
        """Literal secrets (passwords) to scrub from any message about this deployment."""
        ...

    def run_script_sync(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Run ``script`` on ``keys`` with ``args`` from a thread; its reply."""
        ...

    async def run_script(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[ScriptArg],
        doing: str = "script",
    ) -> Any:
        """Async face of :meth:`run_script_sync`."""
        ...


def script_slot(keys: Sequence[str | bytes]) -> int:
    """The one cluster slot of a script's keys (0 for none).

    Raises ConfigurationError when they are on different slots.
    """
    slots = {key_slot(k if isinstance(k, bytes) else k.encode()) for k in keys}
    if len(slots) > 1:
        raise ConfigurationError(
            "on Redis Cluster a script's keys must share a hash slot; put a {hash tag} in "
            f"them (keys: {list(keys)!r:.200})",
            field="keys",
        )
    return slots.pop() if slots else 0


async def run_script_on(
    client: RedisClient | AsyncClusterClient,
    script: Script,
    keys: Sequence[str | bytes],
    args: Sequence[ScriptArg],
    doing: str,
) -> Any:
    """Run ``script`` through one of our asyncio clients (a server's or a cluster's).

    Raises ConfigurationError for keys of different cluster slots, StorageUnavailable /
    StorageError when Redis fails (an unexpected exception of the client included).
    """
    call = script.call(list(keys), list(args))
    slot = script_slot(keys) if isinstance(client, AsyncClusterClient) else 0
    try:
        if isinstance(client, AsyncClusterClient):
            return await client.run_script(script, call, slot, doing)
        return await client.run_script(script, call, doing=doing)
    except StorageError:
        raise
    except Exception as exc:  # our client's bugs are storage errors too
        raise from_exception(exc, doing, client.secrets) from exc


def run_script_on_sync(
    client: SyncRedisClient | SyncClusterClient,
    script: Script,
    keys: Sequence[str | bytes],
    args: Sequence[ScriptArg],
    doing: str,
) -> Any:
    """Sync twin of :func:`run_script_on`."""
    call = script.call(list(keys), list(args))
    slot = script_slot(keys) if isinstance(client, SyncClusterClient) else 0
    try:
        if isinstance(client, SyncClusterClient):
            return client.run_script(script, call, slot, doing)
        return client.run_script(script, call, doing=doing)
    except StorageError:
        raise
    except Exception as exc:
        raise from_exception(exc, doing, client.secrets) from exc
