"""One translation of what goes wrong talking to Redis into the package's error tree.

* The connection failed (refused, reset, closed, timed out, TLS): StorageUnavailable.
* The server answered with an error: StorageError, except the replies that mean "this
  server cannot answer now" (``READONLY`` after a failover, ``LOADING``, ``MASTERDOWN``,
  ``CLUSTERDOWN``, ``TRYAGAIN``, ``BUSY`` script): StorageUnavailable, which the failover
  layer counts as an outage.

A connect that fails fails every call waiting on it with a :class:`ConnectFailed` of the
same ``attempt``; only the call that started the attempt gets ``is_repeat=False``, so a
failure counter that skips repeats counts one failed connect once, however many calls
waited on it. Every message is scrubbed of the connection's secrets.
"""

from __future__ import annotations

import itertools

from sergas_guard.errors import StorageError, StorageUnavailable
from sergas_guard.redis.protocol import ErrorReply
from sergas_guard.secrets import scrub

__all__ = [
    "UNAVAILABLE_CODES",
    "CallTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "from_error_reply",
    "from_exception",
    "next_attempt",
]

#: Error replies meaning the server cannot serve now, not that the command is wrong.
UNAVAILABLE_CODES = frozenset(
    {"READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY"}
)


class ConnectFailed(StorageUnavailable):
    """No connection could be made (refused, timed out, handshake refused).

    The command was certainly not sent. ``attempt`` identifies the connect attempt (the
    calls that waited on one attempt share it); ``is_repeat`` is False for exactly one of
    them (the call that started it), so a failure count that skips repeats sees one.
    """

    def __init__(self, message: str, *, attempt: int, is_repeat: bool = False) -> None:
        super().__init__(message)
        self.attempt = attempt
        self.is_repeat = is_repeat


class CallTimeout(StorageUnavailable):
    """No reply within the call's deadline. The command may have run: never retried."""


class ConnectionLost(StorageUnavailable):
    """The connection broke after the command was written. It may have run: never retried."""


_attempts = itertools.count(1)


def next_attempt() -> int:
    """A number for a new connect attempt, unique in this process."""
    return next(_attempts)


def from_error_reply(reply: ErrorReply, doing: str, secrets: tuple[str, ...] = ()) -> StorageError:
    """Our error for an error reply of the server to ``doing`` (e.g. "decision")."""
    message = scrub(f"Redis {doing} failed: {reply}", *secrets)
    if reply.code in UNAVAILABLE_CODES:
        return StorageUnavailable(message)
    return StorageError(message)


def from_exception(exc: BaseException, doing: str, secrets: tuple[str, ...] = ()) -> StorageError:
    """Our error for an exception raised while talking to Redis; ours pass through.

    Socket errors, timeouts and TLS errors are StorageUnavailable; anything else (a bug
    of a driver) is a StorageError, so the caller's policy still applies.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ErrorReply):
        return from_error_reply(exc, doing, secrets)
    message = scrub(f"Redis {doing} failed: {type(exc).__name__}: {exc}", *secrets)
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return StorageUnavailable(message)
    return StorageError(message)
