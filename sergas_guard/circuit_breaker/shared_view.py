"""What a process may decide alone about a shared breaker: the state the store last returned.

A breaker shared through a store (Redis) pays a round trip per step. Recording an
outcome must reach the store, and its reply carries the breaker's new state; this
module turns that reply into local decisions for the calls that follow, so a call in
the steady state costs one round trip (its outcome) instead of two:

* CLOSED, METRICS_ONLY, DISABLED: admit, while the view is younger than
  ``shared_state_max_age`` and fewer than ``shared_state_max_calls`` calls admitted
  from it are still unreported;
* OPEN before its wait ends, FORCED_OPEN: refuse, while the view is young; the
  refusals are counted and handed to the store with the next step;
* everything that needs a claim only the store can make (a half-open probe slot, an
  OPEN breaker whose wait has ended) or a view too old or too busy: ask the store.

The bound this gives: after a peer opens the breaker, a process admits at most
``shared_state_max_calls`` calls from its stale view, and none later than
``shared_state_max_age`` after the opening (see :class:`SharedView`). Their outcomes
carry the old generation, so the store ignores them, as it ignores any call that
outlives its state.

Pure: no I/O, no clock, no lock; the handle that owns a view serialises access.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.core import Decision
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState, EventKind

__all__ = ["CachedPermit", "SharedView", "StoreState"]

_OPEN = CircuitState.OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_ADMIT_ALL = frozenset((CircuitState.CLOSED, CircuitState.METRICS_ONLY, CircuitState.DISABLED))


class CachedPermit(Decision):
    """A permit given from the cached view (not by the store): its outcome frees a slot."""

    __slots__ = ()


class StoreState(NamedTuple):
    """The part of a store's reply a view keeps: where the breaker stood, and when.

    ``server_now`` is the store's clock when it ran the step; ``open_until`` the store
    time the OPEN wait ends (meaningful only in OPEN).
    """

    state: CircuitState
    generation: int
    server_now: float
    open_until: float


class SharedView:
    """The latest state a store returned to this process, and the calls decided from it.

    Why the bound holds. Say a peer opens the breaker at store time ``t0``. A view
    admits calls only while it says an admitting state, so from ``t0`` on only a view
    built from a step the store ran before ``t0`` can admit. (1) Time: a view's age
    counts from when its request was *sent*, before the store ran it, hence before
    ``t0``; so no call is admitted from it later than ``shared_state_max_age`` after
    ``t0``. (2) Count: each admitted call holds one of ``shared_state_max_calls``
    slots until the reply to its outcome arrives. A reply to a step run after ``t0``
    says OPEN and (being newer) replaces the view, which stops local admission; so
    the only slots freed after ``t0`` while the view still admits belong to outcomes
    sent before ``t0``, i.e. to calls that already held a slot at ``t0``. Slots free
    at ``t0`` plus slots freed later are at most ``shared_state_max_calls``: that is
    how many calls a process can start after ``t0`` before it learns.
    """

    __slots__ = (
        "_max_age",
        "_max_calls",
        "_name",
        "_offset",
        "_permit",
        "_sent_at",
        "_wait",
        "current",
        "refused",
        "running",
    )

    def __init__(self, name: str, config: CircuitBreakerConfig) -> None:
        self._name = name
        self._max_age = config.shared_state_max_age
        self._max_calls = config.shared_state_max_calls
        self._wait = config.wait_duration_in_open
        #: The state last learnt (None: nothing known, ask the store).
        self.current: StoreState | None = None
        #: Calls admitted from a view whose outcome has not been answered yet.
        self.running = 0
        #: Calls refused from a view, not yet reported to the store.
        self.refused = 0
        self._sent_at = 0.0
        self._offset = 0.0  # store time minus local time, as seen by the view's request
        self._permit: Decision | None = None

    def decide(self, now: float) -> tuple[Decision, Sequence[CircuitBreakerEvent]] | None:
        """A decision for a call starting at local time ``now``, or None: ask the store."""
        current = self.current
        if current is None or now - self._sent_at >= self._max_age:
            return None
        permit = self._permit
        if permit is not None:
            if self.running >= self._max_calls:
                return None
            self.running += 1
            return permit, ()
        state = current.state
        if state is _OPEN:
            # The store's time now is at most this (the request left before the store
            # ran it), so the wait is never taken to last longer than it does.
            left = current.open_until - (now + self._offset)
            if left <= 0:
                return None  # the wait may be over: only the store can hand out probes
            retry_after = left
        elif state is _FORCED_OPEN:
            retry_after = self._wait
        else:
            return None  # HALF_OPEN: probe slots are claimed in the store
        self.refused += 1
        refusal = Decision(False, state, current.generation, 0, retry_after)
        event = CircuitBreakerEvent(EventKind.CALL_NOT_PERMITTED, self._name, state)
        return refusal, (event,)

    def learn(self, sent_at: float, news: StoreState) -> None:
        """Keep ``news`` (a reply to a request sent at local ``sent_at``) if it is newer.

        Replies on several connections can arrive out of order; the store's clock orders
        them. Taking an older reply could re-open local admission after a newer one said
        OPEN, which the bound forbids; so if the store's clock steps back, calls ask the
        store (correct, one round trip more) until its clock passes the view again.
        """
        current = self.current
        if current is not None and (news.server_now, news.generation) < (
            current.server_now,
            current.generation,
        ):
            return
        self.current = news
        self._sent_at = sent_at
        self._offset = news.server_now - sent_at
        self._permit = (
            CachedPermit(True, news.state, news.generation) if news.state in _ADMIT_ALL else None
        )

    def settled(self, decision: Decision) -> None:
        """The outcome of a call decided with ``decision`` was answered (or lost)."""
        if type(decision) is CachedPermit:
            self.running -= 1

    def take_refused(self) -> int:
        """The refusals to report with the next step (forgotten here until given back)."""
        refused = self.refused
        self.refused = 0
        return refused

    def give_back_refused(self, refused: int) -> None:
        """Refusals whose report failed: report them with a later step."""
        self.refused += refused

    def forget(self) -> None:
        """Drop the view (the store failed): the next call asks the store."""
        self.current = None
        self._permit = None
