"""The exception tree of sergas_guard.

Every error this package raises on purpose derives from :class:`GuardError`,
so callers can catch the whole family with one ``except`` or a precise leaf::

    GuardError
    ├── ConfigurationError        a bad value or combination, raised at construction
    │   └── HealthCheckError      a health check could not be built or run as configured
    ├── RateLimitExceeded         a limit rejected the call (carries retry_after)
    ├── RequestTooCostly          a request costs more than its limit can ever admit
    ├── CircuitOpenError          a circuit breaker refused the call (carries retry_after)
    ├── FeatureDisabledError      a feature flag is off for this call
    ├── QueueItemRejected         a queue refused or dropped an item (carries reason)
    ├── QueueItemTimeout          a queued item's deadline passed (also a TimeoutError)
    ├── StorageError              a store misbehaved
    │   └── StorageUnavailable    the store cannot be reached (timeout, refused, down)
    └── BackupError               a backup or restore failed
        ├── IntegrityError        stored data does not match its checksum
        ├── BackupNotFoundError   no backup with that id
        └── UnsafeRestoreError    a restore would write outside its target

Messages name what is wrong and never contain secrets: connection strings are
scrubbed with :func:`sergas_guard.secrets.scrub` before they reach a message.
"""

from __future__ import annotations

import math

__all__ = [
    "BackupError",
    "BackupNotFoundError",
    "CircuitOpenError",
    "ConfigurationError",
    "FeatureDisabledError",
    "GuardError",
    "HealthCheckError",
    "IntegrityError",
    "QueueItemRejected",
    "QueueItemTimeout",
    "RateLimitExceeded",
    "RequestTooCostly",
    "StorageError",
    "StorageUnavailable",
    "UnsafeRestoreError",
]


class GuardError(Exception):
    """Base class of every error raised by sergas_guard."""


class ConfigurationError(GuardError, ValueError):
    """A configuration value is invalid; ``field`` names the offending setting."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RateLimitExceeded(GuardError):
    """A rate limit rejected the call.

    ``retry_after`` is the number of seconds after which the same call would be
    admitted (absent other traffic); ``limit`` describes the violated limit and
    ``key`` the identity it was counted against.
    """

    def __init__(
        self,
        *,
        key: str,
        limit: str,
        retry_after: float,
        remaining: int = 0,
        reset_after: float = 0.0,
        message: str | None = None,
    ) -> None:
        self.key = key
        self.limit = limit
        self.retry_after = retry_after
        self.remaining = remaining
        self.reset_after = reset_after
        super().__init__(
            message or f"rate limit {limit} exceeded for {key!r}; retry after {retry_after:.3f}s"
        )

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, as a ``Retry-After`` header wants."""
        return max(0, math.ceil(self.retry_after))


class RequestTooCostly(GuardError):
    """A request costs more than its rate limit can ever admit at once: no wait would
    admit it, so unlike :class:`RateLimitExceeded` there is no ``retry_after``.

    Raised by ``@rate_limited`` while a web request is served when the cost comes from
    the request (e.g. its ``Content-Length``); the web edges answer it with 413.
    ``limit`` describes the limit, ``capacity`` the most it admits at once.
    """

    def __init__(self, *, limit: str, capacity: int) -> None:
        self.limit = limit
        self.capacity = capacity
        super().__init__(f"the request costs more than {limit} can ever admit at once ({capacity})")


class CircuitOpenError(GuardError):
    """A circuit breaker is open (or its half-open probes are taken) and refused the call."""

    def __init__(self, name: str, *, retry_after: float, state: str = "open") -> None:
        self.name = name
        self.retry_after = retry_after
        self.state = state
        super().__init__(
            f"circuit {name!r} is {state}; calls are refused for another {retry_after:.3f}s"
        )


class FeatureDisabledError(GuardError):
    """A feature flag is off for this call and no fallback was given."""

    def __init__(self, flag: str, *, reason: str = "disabled") -> None:
        self.flag = flag
        self.reason = reason
        super().__init__(f"feature {flag!r} is off for this call ({reason})")


class QueueItemRejected(GuardError):
    """A queue refused an item or dropped it unrun: ``reason`` says why.

    Reasons: ``"full"`` and ``"closed"`` (refused at the door), ``"queue_delay"`` (dropped
    by the queue discipline in a standing queue), ``"stopped"`` (the queue stopped before
    it could finish) and ``"returned"`` (handed back to whoever stopped the queue).
    """

    def __init__(self, queue: str, *, reason: str, request_id: str | None = None) -> None:
        self.queue = queue
        self.reason = reason
        self.request_id = request_id
        shown = "" if request_id is None else f" {request_id!r}"
        super().__init__(f"queue {queue!r} did not run item{shown}: {reason}")


class QueueItemTimeout(GuardError, TimeoutError):
    """A queued item's deadline (the queue's ``timeout``, from acceptance) passed before
    it finished; it was dropped unrun, cancelled, or its late result discarded."""

    def __init__(self, queue: str, *, timeout: float, request_id: str | None = None) -> None:
        self.queue = queue
        self.timeout = timeout
        self.request_id = request_id
        shown = "" if request_id is None else f" {request_id!r}"
        super().__init__(f"queue {queue!r} item{shown} did not finish within {timeout:g}s")


class StorageError(GuardError):
    """A storage backend returned an error or data it should not hold."""


class StorageUnavailable(StorageError):
    """A storage backend cannot be reached: refused, timed out, or skipped while it cools down.

    ``retry_after`` is the seconds until the store will be tried again, when known.
    """

    def __init__(self, message: str = "storage unavailable", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class HealthCheckError(ConfigurationError):
    """A health check is misconfigured or could not be constructed (``field`` names the setting)."""


class BackupError(GuardError):
    """A backup, restore or retention operation failed."""


class IntegrityError(BackupError):
    """Stored backup data does not match the checksum recorded when it was written."""


class BackupNotFoundError(BackupError):
    """No backup exists with the requested id."""


class UnsafeRestoreError(BackupError):
    """A restore would write outside its target directory (path traversal, links)."""
