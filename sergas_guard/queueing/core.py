"""The queue's bookkeeping, shared by the asyncio and the threaded faces.

:class:`QueueCore` holds the discipline, the concurrency limit policy and the counters,
and is pure: no I/O, no clock (every call takes ``now``, monotonic seconds), no asyncio,
no lock (each face calls it under its own). It decides what runs next and records how
each item ended, so the faces only run functions and wake workers.

Every accepted item ends in exactly one outcome, counted once::

    accepted == done + failed + timed_out + sum(rejected.values()) + returned
                + depth + in_flight

where ``rejected`` counts accepted items dropped unrun or cut short (queue_delay,
cancelled, stopped); items refused at the door (full, closed) were never accepted and are
counted in ``refused``.
"""

from __future__ import annotations

import math
from collections import Counter
from enum import IntEnum
from typing import Any, Generic, TypeVar

from sergas_guard import validation
from sergas_guard.queueing.discipline import Drop, Entry, QueueDiscipline
from sergas_guard.queueing.limits import limit_policy
from sergas_guard.queueing.policy import FixedLimit, LimitPolicy
from sergas_guard.queueing.stats import RecentSamples

__all__ = ["Outcome", "QueueCore", "Settled"]

T = TypeVar("T")


class Outcome(IntEnum):
    """How an accepted item ended (an IntEnum: counted per item, it must hash fast)."""

    DONE = 0
    FAILED = 1
    TIMED_OUT = 2
    REJECTED = 3
    RETURNED = 4


#: An item that ended without running to completion, with its outcome and reason.
Settled = tuple[Entry[T], Outcome, str]


def _settled(dropped: list[tuple[Entry[T], Drop]]) -> list[Settled[T]]:
    return [
        (entry, Outcome.TIMED_OUT, "deadline")
        if why is Drop.DEADLINE
        else (entry, Outcome.REJECTED, why.value)
        for entry, why in dropped
    ]


class QueueCore(Generic[T]):
    """Admission, scheduling and accounting of one queue (see the module docstring)."""

    def __init__(
        self,
        *,
        max_size: int,
        max_workers: int,
        timeout: float | None,
        limit: str | LimitPolicy = "fixed",
        target_delay: float = 0.005,
        interval: float = 0.1,
        codel: bool = True,
        adaptive_lifo: bool = True,
    ) -> None:
        """Raises ConfigurationError naming the field for any bad setting."""
        self.max_workers = validation.whole(max_workers, "max_workers", minimum=1, maximum=10_000)
        self.timeout = None if timeout is None else validation.seconds(timeout, "timeout")
        self.discipline: QueueDiscipline[T] = QueueDiscipline(
            max_size,
            target=target_delay,
            interval=interval,
            codel=codel,
            adaptive_lifo=adaptive_lifo,
        )
        self.policy = limit_policy(limit, self.max_workers)
        self._learns = not isinstance(self.policy, FixedLimit)  # a fixed limit needs no samples
        #: How many items may run at once now: the policy's limit, at most ``max_workers``
        #: (kept here, as it is read for every item and changes only after a sample).
        self.limit = min(self.policy.limit, self.max_workers)
        self.in_flight = 0
        self.accepted = 0
        self.outcomes: Counter[Outcome] = Counter()
        self.rejected: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.closed = False
        self.queue_times = RecentSamples()
        self._named: dict[str, list[Entry[T]]] = {}
        self.service_times = RecentSamples()

    @property
    def depth(self) -> int:
        return len(self.discipline)

    def admit(
        self, payload: T, priority: int, request_id: str | None, now: float
    ) -> tuple[Entry[T] | None, list[Settled[T]]]:
        """Queue an item; None when refused (counted in ``refused`` by reason), and the
        stale items purged to make room for it."""
        if self.closed:
            self.refused["closed"] += 1
            return None, []
        deadline = math.inf if self.timeout is None else now + self.timeout
        entry = Entry(payload, priority, now, deadline, request_id)
        settled: list[Settled[T]] = []
        if not self.discipline.offer(entry, now):
            settled = self._count(_settled(self.discipline.purge(now)))
            if not self.discipline.offer(entry, now):
                self.refused["full"] += 1
                return None, settled
        self.accepted += 1
        if request_id is not None:
            self._named.setdefault(request_id, []).append(entry)
        return entry, settled

    def next_entry(self, now: float) -> tuple[Entry[T] | None, list[Settled[T]]]:
        """The next item to start, if the limit allows one more, marked as running; and the
        items the discipline dropped on the way (already counted)."""
        if self.in_flight >= self.limit:
            return None, []
        # Asked even when empty: a free worker finding nothing to do is what tells the
        # discipline that service keeps up.
        entry, dropped = self.discipline.take(now)
        settled = self._count(_settled(dropped)) if dropped else []
        if entry is not None:
            self.in_flight += 1
            entry.started_at = now
            entry.in_flight_at_start = self.in_flight
            self.queue_times.add(now - entry.enqueued_at)
        return entry, settled

    def finish(self, entry: Entry[T], outcome: Outcome, now: float, reason: str = "") -> int:
        """Record how a running item ended and learn from it; returns the new limit.

        A timeout tells the policy the service is overloaded; a cancellation or a stop
        says nothing about the service, so it is not a sample.
        """
        self.in_flight -= 1
        self.outcomes[outcome] += 1
        if entry.request_id is not None:
            self._forget(entry)
        if outcome is Outcome.REJECTED:
            self.rejected[reason] += 1
            return self.limit
        rtt = now - entry.started_at
        self.service_times.add(rtt)
        if self._learns:
            learned = self.policy.on_sample(
                entry.started_at, rtt, entry.in_flight_at_start, outcome is Outcome.TIMED_OUT
            )
            self.limit = min(learned, self.max_workers)
        return self.limit

    def cancel(self, entry: Entry[T], now: float) -> bool:
        """Take a queued item out (counted as rejected: cancelled); False if not queued."""
        if not self.discipline.remove(entry, now):
            return False
        self._count([(entry, Outcome.REJECTED, "cancelled")])
        return True

    def close(self) -> None:
        """Refuse every later admission (reason ``closed``)."""
        self.closed = True

    def hand_back(self, now: float) -> list[Entry[T]]:
        """Empty the queue, counting its items as returned; they are the caller's now."""
        entries = self.discipline.drain(now)
        self.outcomes[Outcome.RETURNED] += len(entries)
        for entry in entries:
            self._forget(entry)
        return entries

    def named(self, request_id: str) -> list[Entry[T]]:
        """The queued or running items named ``request_id``."""
        return list(self._named.get(request_id, ()))

    def _count(self, settled: list[Settled[T]]) -> list[Settled[T]]:
        for entry, outcome, reason in settled:
            self._forget(entry)
            self.outcomes[outcome] += 1
            if outcome is Outcome.REJECTED:
                self.rejected[reason] += 1
        return settled

    def _forget(self, entry: Entry[T]) -> None:
        if entry.request_id is not None:
            entries = self._named.get(entry.request_id)
            if entries is not None:
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    del self._named[entry.request_id]

    def unaccounted(self) -> int:
        """Accepted items not yet ended, beyond those queued or running: always 0."""
        ended = sum(self.outcomes.values())
        return self.accepted - ended - self.depth - self.in_flight

    def metrics(self, now: float) -> dict[str, Any]:
        """The numbers behind ``get_metrics()`` (the seed's keys and the detailed ones)."""
        depth = self.depth
        capacity = self.discipline.max_size
        queue_p50, queue_p99 = self.queue_times.percentiles(0.5, 0.99)
        service_p50, service_p99 = self.service_times.percentiles(0.5, 0.99)
        rejected = dict(self.refused + self.rejected)
        outcomes = self.outcomes
        return {
            # the seed's keys
            "queue_size": depth,
            "max_size": capacity,
            "utilization_percent": round(100.0 * depth / capacity, 2),
            "active_workers": self.in_flight,
            "processed_count": outcomes[Outcome.DONE],
            "failed_count": outcomes[Outcome.FAILED],
            "timeout_count": outcomes[Outcome.TIMED_OUT],
            # the detailed ones
            "depth": depth,
            "capacity": capacity,
            "utilization": depth / capacity,
            "in_flight": self.in_flight,
            "limit": self.limit,
            "max_workers": self.max_workers,
            "accepted": self.accepted,
            "processed": outcomes[Outcome.DONE],
            "failed": outcomes[Outcome.FAILED],
            "timed_out": outcomes[Outcome.TIMED_OUT],
            "returned": outcomes[Outcome.RETURNED],
            "rejected": rejected,
            "rejected_count": sum(rejected.values()),
            "time_in_queue_p50": queue_p50,
            "time_in_queue_p99": queue_p99,
            "service_time_p50": service_p50,
            "service_time_p99": service_p99,
            "standing_queue": self.discipline.standing(now),
            "seconds_since_empty": now - self.discipline.last_empty(now),
        }
