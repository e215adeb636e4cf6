"""Compatibility path: ``sergas_guard.storage.peers`` is now
:mod:`sergas_guard.ratelimit.stores.peers` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.peers import (
    FIRST_RECOUNT_SECONDS,
    HEARTBEAT_SCRIPT,
    HEARTBEAT_SECONDS,
    PEER_TTL_SECONDS,
    HeartbeatStorage,
    Peers,
    process_id,
)

__all__ = [
    "FIRST_RECOUNT_SECONDS",
    "HEARTBEAT_SCRIPT",
    "HEARTBEAT_SECONDS",
    "PEER_TTL_SECONDS",
    "HeartbeatStorage",
    "Peers",
    "process_id",
]
