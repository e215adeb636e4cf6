"""The breaker's state machine: events in, state and decisions out, no I/O and no clock.

Every method takes ``now`` (seconds on a clock that never goes backwards) and returns
what happened; the caller holds whatever lock makes it atomic. ``lua/breaker.lua`` is
its twin for Redis and must decide identically (a differential test holds them together).

Calls carry a *permit*: the ``generation`` of the state that admitted them (bumped by
every transition) and, in half-open, the id of the probe slot they hold. An outcome
whose generation is stale (the breaker moved on while the call ran) is not recorded,
so a slow call admitted while closed cannot sway a later half-open judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.state import CircuitBreakerEvent, CircuitState, EventKind
from sergas_guard.circuit_breaker.window import CountWindow, OutcomeWindow, TimeWindow, rate

__all__ = ["BreakerCore", "Decision", "Snapshot"]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_METRICS_ONLY = CircuitState.METRICS_ONLY
# States that let every call through, so admitting one needs neither the clock nor a lock.
_ADMIT_ALL = frozenset((_CLOSED, _METRICS_ONLY, _DISABLED))


class Decision(NamedTuple):
    """Whether a call may run; ``probe`` is its half-open slot (0 outside half-open)."""

    permitted: bool
    state: CircuitState
    generation: int
    probe: int = 0
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a breaker looks like at one instant (the numbers behind ``get_metrics()``)."""

    state: CircuitState
    retry_after: float
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    rejected_calls: int
    not_permitted_calls: int
    probes_in_flight: int
    consecutive_opens: int


class BreakerCore:
    """The state of one breaker and the rules that move it.

    ``events`` collects what the last operations produced; the owner drains it
    (outside its lock) with :meth:`drain_events` and hands the events to listeners.
    ``free`` is the decision every call gets while the state admits all calls (CLOSED,
    METRICS_ONLY, DISABLED) and None otherwise; it is replaced, never changed, at each
    transition, so a caller may read it without the lock (see :meth:`free_pass`).
    """

    __slots__ = (
        "_failure_threshold",
        "_minimum_calls",
        "_slow_duration",
        "_slow_threshold",
        "config",
        "consecutive_opens",
        "entered_at",
        "events",
        "free",
        "generation",
        "half_calls",
        "half_failures",
        "half_slow",
        "name",
        "next_probe",
        "not_permitted",
        "open_wait",
        "probes",
        "rejected",
        "state",
        "window",
    )

    def __init__(self, name: str, config: CircuitBreakerConfig, now: float) -> None:
        self.name = name
        self.config = config
        # Read on every recorded outcome: plain attributes of a slotted object are
        # cheaper to reach than fields of the (frozen) pydantic config.
        self._slow_duration = config.slow_call_duration
        self._minimum_calls = config.minimum_calls
        self._failure_threshold = config.failure_rate_threshold
        self._slow_threshold = config.slow_call_rate_threshold
        self.window: OutcomeWindow = (
            CountWindow(config.window_size)
            if config.window_type == "count"
            else TimeWindow(config.window_size)
        )
        self.state = _CLOSED
        self.entered_at = now
        self.open_wait = 0.0
        self.consecutive_opens = 0
        self.generation = 0
        self.next_probe = 1
        self.probes: dict[int, float] = {}  # probe id -> time its lease ends
        self.half_calls = self.half_failures = self.half_slow = 0
        self.rejected = self.not_permitted = 0
        self.events: list[CircuitBreakerEvent] = []
        # Rebuilt when the generation changes, so the hot path allocates nothing.
        self.free: Decision | None = Decision(True, self.state, self.generation)

    # -- operations -----------------------------------------------------------------

    def free_pass(self) -> Decision | None:
        """The decision of :meth:`acquire` when the state admits every call, else None.

        Needs no lock: the pass is replaced (never changed) at each transition, so one
        read sees a consistent state and generation. A call admitted just as another
        thread opens the breaker carries the old generation and its outcome is ignored,
        exactly as if it had been admitted a moment earlier.
        """
        return self.free

    def acquire(self, now: float) -> Decision:
        """Decide whether one call may run now."""
        admitted = self.free
        if admitted is not None:
            return admitted  # time moves none of these states: no refresh needed
        self._refresh(now)
        admitted = self.free
        if admitted is not None:
            return admitted
        state = self.state
        if state is _HALF_OPEN:
            if len(self.probes) + self.half_calls < self.config.permitted_calls_in_half_open:
                probe = self.next_probe
                self.next_probe += 1
                self.probes[probe] = now + self.config.probe_timeout
                return Decision(True, state, self.generation, probe)
            self.not_permitted += 1
        else:
            self.rejected += 1
        self._emit(EventKind.CALL_NOT_PERMITTED)
        return Decision(False, state, self.generation, 0, self.retry_after(now))

    def record(
        self, now: float, generation: int, probe: int, duration: float, failed: bool
    ) -> None:
        """Record the outcome of a call admitted with ``generation``/``probe``."""
        state = self.state
        if state is _OPEN or state is _HALF_OPEN:
            self._refresh(now)
            state = self.state
        if generation != self.generation:
            return
        slow = duration >= self._slow_duration
        if state is _CLOSED or state is _METRICS_ONLY:
            window = self.window
            # Totals that stand were judged when they were reached, in this same CLOSED
            # spell (entering CLOSED empties the window), and found below the
            # thresholds. METRICS_ONLY judges every call, to report each excess.
            if not window.add(now, failed, slow) and state is _CLOSED:
                return
            calls = window.calls
            # The rates are compared inline (the same arithmetic as rate()) so that the
            # common case, a healthy call, costs no function call.
            if calls >= self._minimum_calls and (
                window.failures * 100.0 / calls >= self._failure_threshold
                or window.slow * 100.0 / calls >= self._slow_threshold
            ):
                self._judge(calls, window.failures, window.slow)
                if state is _CLOSED:
                    self._enter(_OPEN, now)
        elif state is _HALF_OPEN and self.probes.pop(probe, None) is not None:
            self.half_calls += 1
            self.half_failures += failed
            self.half_slow += slow
            if self.half_calls >= self.config.permitted_calls_in_half_open:
                tripped = self._judge(self.half_calls, self.half_failures, self.half_slow)
                self._enter(_OPEN if tripped else _CLOSED, now)

    def release(self, now: float, generation: int, probe: int) -> None:
        """Give back the slot of a call that ended without an outcome (cancelled, ignored)."""
        self._refresh(now)
        if generation == self.generation:
            self.probes.pop(probe, None)

    def transition(self, now: float, target: CircuitState) -> None:
        """Move to ``target`` by hand (nothing happens when already there)."""
        self._refresh(now)
        if target is not self.state:
            self._enter(target, now)

    def reset(self, now: float) -> None:
        """Back to a fresh CLOSED breaker: empty window, counters and backoff at zero."""
        if self.state is not _CLOSED:
            self._enter(_CLOSED, now)
        else:
            self.generation += 1
            self.free = Decision(True, _CLOSED, self.generation)
            self.window.clear()
        self.consecutive_opens = self.rejected = self.not_permitted = 0

    def snapshot(self, now: float) -> Snapshot:
        """The state and numbers of the breaker at ``now``."""
        self._refresh(now)
        # Only reading needs an aged window: adding an outcome ages it first, and
        # ageing later instead of sooner leaves the same buckets.
        self.window.refresh(now)
        in_half_open = self.state is _HALF_OPEN
        calls, failures, slow = (
            (self.half_calls, self.half_failures, self.half_slow)
            if in_half_open
            else (self.window.calls, self.window.failures, self.window.slow)
        )
        return Snapshot(
            state=self.state,
            retry_after=self.retry_after(now) if self.state.refuses_calls else 0.0,
            buffered_calls=calls,
            failed_calls=failures,
            slow_calls=slow,
            failure_rate=rate(failures, calls),
            slow_call_rate=rate(slow, calls),
            rejected_calls=self.rejected,
            not_permitted_calls=self.not_permitted,
            probes_in_flight=len(self.probes),
            consecutive_opens=self.consecutive_opens,
        )

    def retry_after(self, now: float) -> float:
        """Seconds a refused caller should wait: until half-open when OPEN, else the base wait."""
        if self.state is _OPEN:
            return max(0.0, self.entered_at + self.open_wait - now)
        return self.config.wait_duration_in_open

    def drain_events(self) -> list[CircuitBreakerEvent]:
        """The events produced since the last drain (and forget them)."""
        events = self.events
        if events:
            self.events = []
        return events

    # -- rules ----------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """Apply the transitions that time alone causes (only OPEN and HALF_OPEN have any)."""
        if self.state is _OPEN and now >= self.entered_at + self.open_wait:
            self._enter(_HALF_OPEN, now)
        if self.state is _HALF_OPEN:
            max_wait = self.config.max_wait_in_half_open
            if max_wait > 0 and now >= self.entered_at + max_wait:
                self._enter(_OPEN, now)
            elif self.probes:
                # Leases that ran out belong to callers that died without reporting.
                for probe in [p for p, ends in self.probes.items() if ends <= now]:
                    del self.probes[probe]

    def _judge(self, calls: int, failures: int, slow: int) -> bool:
        """True (and an event per rate) when a rate reaches its threshold."""
        failure_rate = rate(failures, calls)
        slow_rate = rate(slow, calls)
        tripped = False
        if failure_rate >= self.config.failure_rate_threshold:
            self._emit(EventKind.FAILURE_RATE_EXCEEDED, rate=failure_rate)
            tripped = True
        if slow_rate >= self.config.slow_call_rate_threshold:
            self._emit(EventKind.SLOW_CALL_RATE_EXCEEDED, rate=slow_rate)
            tripped = True
        return tripped

    def _enter(self, target: CircuitState, now: float) -> None:
        previous = self.state
        self.state = target
        self.entered_at = now
        self.generation += 1
        self.free = Decision(True, target, self.generation) if target in _ADMIT_ALL else None
        self.probes.clear()
        self.half_calls = self.half_failures = self.half_slow = 0
        if target is _OPEN:
            self.consecutive_opens += 1
            self.open_wait = self.config.open_wait(self.consecutive_opens)
        elif target is _CLOSED or target is _DISABLED or target is _METRICS_ONLY:
            self.consecutive_opens = 0
            self.window.clear()
        self._emit(EventKind.STATE_TRANSITION, from_state=previous, to_state=target)

    def _emit(
        self,
        kind: EventKind,
        *,
        from_state: CircuitState | None = None,
        to_state: CircuitState | None = None,
        rate: float | None = None,
    ) -> None:
        self.events.append(
            CircuitBreakerEvent(kind, self.name, self.state, from_state, to_state, rate)
        )
