"""The one Redis backend every capability uses: URLs, typed handles, multiplexed
pipelined connections, scripts and one error translation (no capability logic here).

Imports only the standard library, :mod:`sergas_guard.errors`, :mod:`sergas_guard.secrets`,
:mod:`sergas_guard.validation` and (optionally) hiredis.
"""

from sergas_guard.redis.address import (
    Address,
    AddressResolver,
    FixedAddress,
    TcpAddress,
    UnixAddress,
)
from sergas_guard.redis.backend import ScriptBackend
from sergas_guard.redis.client import RedisClient, SyncRedisClient, client_target
from sergas_guard.redis.cluster import AsyncClusterClient, SyncClusterClient, key_slot
from sergas_guard.redis.errors import CallTimeout, ConnectFailed, ConnectionLost
from sergas_guard.redis.protocol import ErrorReply
from sergas_guard.redis.runner import ScriptRunner
from sergas_guard.redis.scripts import Script, ScriptArg
from sergas_guard.redis.url import (
    ClusterTarget,
    ConnectOptions,
    SentinelTarget,
    SingleTarget,
    Target,
    parse_url,
)

__all__ = [
    "Address",
    "AddressResolver",
    "AsyncClusterClient",
    "CallTimeout",
    "ClusterTarget",
    "ConnectFailed",
    "ConnectOptions",
    "ConnectionLost",
    "ErrorReply",
    "FixedAddress",
    "RedisClient",
    "Script",
    "ScriptArg",
    "ScriptBackend",
    "ScriptRunner",
    "SentinelTarget",
    "SingleTarget",
    "SyncClusterClient",
    "SyncRedisClient",
    "TcpAddress",
    "Target",
    "UnixAddress",
    "client_target",
    "key_slot",
    "parse_url",
]
