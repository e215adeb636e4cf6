"""The queue discipline of Facebook's "Fail at Scale": priorities, CoDel deadlines, adaptive LIFO.

A pure, bounded priority queue (no I/O, no clock: every call takes ``now``, seconds on a
monotonic clock). Lower priority numbers are served first; within a priority:

* **Controlled delay (CoDel).** A queue that emptied within the last ``interval`` (100 ms)
  is absorbing a burst, and its items wait as they must. A queue that has *not* been empty
  for ``interval`` is a standing queue: there, an item that has waited longer than
  ``target`` (5 ms) is dropped before it runs, as its caller has likely given up or soon
  will, and serving it would only make the next item late too. The queue stays in that
  mode while drops go on (a drop within the last ``interval``), so a moment of emptiness
  between two rounds of drops does not end it. Nothing is dropped for delay before the
  queue has stood non-empty for a whole ``interval``.
* **Adaptive LIFO.** In a standing queue the newest item of a priority is served first
  (its caller is still waiting, and it meets its deadline), while the oldest ones age
  out under CoDel; once the queue drains, order returns to first in, first out.
* **Deadlines.** An item whose own deadline passed is dropped as timed out.

Dropped items are handed back to the caller with why, so every item ends in exactly one
outcome; the queue itself counts nothing.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from sergas_guard import validation
from sergas_guard.errors import ConfigurationError

__all__ = ["Drop", "Dropped", "Entry", "QueueDiscipline"]

T = TypeVar("T")


class Drop(Enum):
    """Why the discipline dropped a queued item."""

    DEADLINE = "deadline"  # the item's own deadline passed while it waited
    QUEUE_DELAY = "queue_delay"  # CoDel: it waited beyond the target in a standing queue


@dataclass(eq=False, slots=True)
class Entry(Generic[T]):
    """One queued item: the caller's ``payload`` and what the discipline orders it by.

    Entries compare by identity; ``started_at`` and ``in_flight_at_start`` are filled in
    by whoever runs the item.
    """

    payload: T
    priority: int
    enqueued_at: float
    deadline: float = math.inf
    request_id: str | None = None
    started_at: float = 0.0
    in_flight_at_start: int = 0


Dropped = tuple[Entry[T], Drop]


class QueueDiscipline(Generic[T]):
    """A bounded priority queue with CoDel drops and adaptive LIFO (see the module docstring)."""

    __slots__ = (
        "_lanes",
        "_last_drop",
        "_last_empty",
        "_order",
        "_size",
        "adaptive_lifo",
        "codel",
        "interval",
        "max_size",
        "target",
    )

    def __init__(
        self,
        max_size: int,
        *,
        target: float = 0.005,
        interval: float = 0.1,
        codel: bool = True,
        adaptive_lifo: bool = True,
    ) -> None:
        """Raises ConfigurationError naming the field for a ``max_size`` below 1, a
        ``target`` or ``interval`` that is not a positive duration, or ``target`` above
        ``interval``."""
        self.max_size = validation.whole(max_size, "max_size", minimum=1, maximum=10**9)
        self.target = validation.seconds(target, "target_delay")
        self.interval = validation.seconds(interval, "interval")
        if self.target > self.interval:
            raise ConfigurationError(
                f"target_delay ({target!r}) must not exceed interval ({interval!r})",
                field="target_delay",
            )
        self.codel = validation.flag(codel, "codel")
        self.adaptive_lifo = validation.flag(adaptive_lifo, "adaptive_lifo")
        self._lanes: dict[int, deque[Entry[T]]] = {}
        self._order: list[int] = []  # the priorities with a lane, ascending
        self._size = 0
        self._last_empty = -math.inf
        # The last CoDel drop: a standing queue stays one while drops continue, even if a
        # round of drops and service empties it for a moment (workers finishing together
        # do that), else each such moment would reset CoDel and the queue would swing
        # between 100 ms of FIFO build-up and a purge.
        self._last_drop = -math.inf

    def __len__(self) -> int:
        return self._size

    def last_empty(self, now: float) -> float:
        """When the queue was last empty (``now`` while it is)."""
        return now if self._size == 0 else self._last_empty

    def standing(self, now: float) -> bool:
        """Whether a standing queue has formed: not empty for longer than ``interval``, or
        CoDel dropped an item within the last ``interval`` (the overload goes on)."""
        return self._size > 0 and (
            now - self._last_empty > self.interval or now - self._last_drop <= self.interval
        )

    def offer(self, entry: Entry[T], now: float) -> bool:
        """Queue ``entry`` unless the queue is full (then False, and nothing changes)."""
        if self._size >= self.max_size:
            return False
        if self._size == 0:
            self._last_empty = now
        lane = self._lanes.get(entry.priority)
        if lane is None:
            lane = self._lanes[entry.priority] = deque()
            bisect.insort(self._order, entry.priority)
        lane.append(entry)
        self._size += 1
        return True

    def take(self, now: float) -> tuple[Entry[T] | None, list[Dropped[T]]]:
        """The next item to run (None when the queue is empty), and the items dropped on
        the way to it with why."""
        dropped: list[Dropped[T]] = []
        overloaded = self._size > 0 and (  # self.standing(now), inlined: it runs per item
            now - self._last_empty > self.interval or now - self._last_drop <= self.interval
        )
        standing = self.codel and overloaded
        lifo = self.adaptive_lifo and overloaded
        order = self._order
        entry: Entry[T] | None = None
        while order:
            priority = order[0]
            lane = self._lanes[priority]
            # The head is the oldest: only a standing queue or a passed deadline can make
            # it stale (this check is the whole cost of a take that drops nothing).
            if standing or lane[0].deadline <= now:
                self._purge_head(lane, now, standing, dropped)
                if not lane:
                    self._close_lane(priority)
                    continue
            entry = lane.pop() if lifo else lane.popleft()
            self._size -= 1
            if not lane:
                self._close_lane(priority)
            if entry.deadline > now and not (standing and now - entry.enqueued_at > self.target):
                break
            dropped.append((entry, self._drop_reason(entry, now, standing) or Drop.DEADLINE))
            entry = None
        if self._size == 0:
            self._last_empty = now
        return entry, dropped

    def purge(self, now: float) -> list[Dropped[T]]:
        """Drop every item that :meth:`take` would drop on reaching it (called when full,
        so stale items do not hold places that fresh ones could use)."""
        dropped: list[Dropped[T]] = []
        standing = self.codel and self.standing(now)
        for priority in list(self._order):
            lane = self._lanes[priority]
            self._purge_head(lane, now, standing, dropped)
            if not lane:
                self._close_lane(priority)
        if self._size == 0:
            self._last_empty = now
        return dropped

    def remove(self, entry: Entry[T], now: float) -> bool:
        """Take ``entry`` out of the queue (a cancellation); False if it is not queued."""
        lane = self._lanes.get(entry.priority)
        if lane is None:
            return False
        try:
            lane.remove(entry)
        except ValueError:
            return False
        self._size -= 1
        if not lane:
            self._close_lane(entry.priority)
        if self._size == 0:
            self._last_empty = now
        return True

    def drain(self, now: float) -> list[Entry[T]]:
        """Empty the queue, returning its items by priority, oldest first within one."""
        items = [entry for priority in self._order for entry in self._lanes[priority]]
        self._lanes.clear()
        self._order.clear()
        self._size = 0
        self._last_empty = now
        return items

    def _drop_reason(self, entry: Entry[T], now: float, standing: bool) -> Drop | None:
        if entry.deadline <= now:
            return Drop.DEADLINE
        if standing and now - entry.enqueued_at > self.target:
            self._last_drop = now
            return Drop.QUEUE_DELAY
        return None

    def _purge_head(
        self, lane: deque[Entry[T]], now: float, standing: bool, dropped: list[Dropped[T]]
    ) -> None:
        # The head of a lane is its oldest item: once it is fresh, so is the rest (bar
        # deadlines that differ per item, which take() checks on the item it serves).
        while lane:
            reason = self._drop_reason(lane[0], now, standing)
            if reason is None:
                return
            dropped.append((lane.popleft(), reason))
            self._size -= 1

    def _close_lane(self, priority: int) -> None:
        del self._lanes[priority]
        self._order.pop(bisect.bisect_left(self._order, priority))
