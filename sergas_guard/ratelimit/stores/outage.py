"""Telling an outage of a storage from a burst of slow calls (pure: no I/O, no lock).

A burst of concurrent calls on a busy host can produce many failures at one instant
(connects that missed their deadline, calls that queued too long) while the storage
itself answers everything else: counting those failures, or their rate, would fail
over a healthy storage. So failures are judged by *time*:

silence
    no call got a successful reply for ``failure_window`` seconds while calls failed:
    counted from the later of the last successful reply and the start of the earliest
    call that failed since. A call that waited that long and failed with no reply
    arriving for anyone meanwhile is an outage; failures of a burst whose other calls
    are answered are not, however many.
failure rate
    at least ``minimum_calls`` calls since failures began (within the last
    ``rate_window`` seconds), of which ``failure_rate`` percent or more failed, and
    the failures span at least ``failure_window`` seconds (one burst's never do):
    a storage that answers some calls and fails many.
failures in a row (only when ``in_a_row`` is set)
    the rule of earlier versions, kept for those who ask for it: it does not tell a
    burst from an outage.

The owner (:class:`~sergas_guard.ratelimit.stores.failover.FailoverStorage`) holds the lock,
reads the clock and resets the detector whenever its circuit changes state.
"""

from __future__ import annotations

import math

from sergas_guard.circuit_breaker.window import TimeWindow

__all__ = ["OutageDetector"]


class OutageDetector:
    """Judges the outcomes of calls to one storage; :meth:`failure` says when to open."""

    __slots__ = (
        "_in_a_row_limit",
        "_minimum_calls",
        "_rate_threshold",
        "_window",
        "failure_window",
        "in_a_row",
        "last_reply",
        "rate_since",
        "silent_since",
    )

    def __init__(
        self,
        failure_window: float,
        rate_window: int,
        failure_rate: float,
        minimum_calls: int,
        in_a_row: int | None = None,
    ) -> None:
        self.failure_window = failure_window
        self._rate_threshold = failure_rate
        self._minimum_calls = minimum_calls
        self._in_a_row_limit = in_a_row
        self._window = TimeWindow(rate_window)
        #: When the last successful reply came (written without the owner's lock by
        #: the healthy path: a plain attribute store, and a value a few microseconds
        #: stale only lengthens a silence by as much).
        self.last_reply = -math.inf
        #: Start of the earliest call that failed since the last successful reply.
        self.silent_since: float | None = None
        #: Time of the first failure of the current failing spell (rate rule).
        self.rate_since: float | None = None
        self.in_a_row = 0

    @property
    def watching(self) -> bool:
        """True while a failure is remembered, so that successes change the judgement."""
        return self.silent_since is not None or self.rate_since is not None or self.in_a_row > 0

    def reset(self) -> None:
        """Forget every outcome (the circuit changed state)."""
        self.silent_since = self.rate_since = None
        self.in_a_row = 0
        self._window.clear()

    def success(self, now: float) -> None:
        """A successful reply at ``now``."""
        if now > self.last_reply:
            self.last_reply = now
        self.silent_since = None
        self.in_a_row = 0
        if self.rate_since is not None:
            self._window.add(now, False, False)
            self._end_spell_if_forgotten()

    def failure(self, started: float, now: float) -> str | None:
        """A call that started at ``started`` failed at ``now``; why to open, or None."""
        if self.silent_since is None or started < self.silent_since:
            self.silent_since = started
        silence = now - max(self.last_reply, self.silent_since)
        if silence >= self.failure_window:
            return f"no reply for {silence:.1f}s"

        window = self._window
        window.refresh(now)
        if window.failures == 0:
            self.rate_since = None  # the failures of an earlier spell aged out
        if self.rate_since is None:
            window.clear()  # the rate counts the calls since failures began
            self.rate_since = now
        window.add(now, True, False)
        calls, failures = window.calls, window.failures
        if (
            calls >= self._minimum_calls
            and failures * 100.0 >= self._rate_threshold * calls
            and now - self.rate_since >= self.failure_window
        ):
            return f"{failures} of {calls} calls failed in {now - self.rate_since:.1f}s"

        self.in_a_row += 1
        if self._in_a_row_limit is not None and self.in_a_row >= self._in_a_row_limit:
            return f"{self.in_a_row} failures in a row"
        return None

    def _end_spell_if_forgotten(self) -> None:
        # Every failure aged out of the window: the spell is over, successes need no
        # counting until the next failure.
        if self._window.failures == 0:
            self.rate_since = None
