"""The states of a circuit breaker and the events it reports to listeners."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CircuitBreakerEvent", "CircuitState", "EventKind"]


class CircuitState(enum.StrEnum):
    """Where a breaker stands.

    ``CLOSED``, ``OPEN`` and ``HALF_OPEN`` are the automatic states; ``FORCED_OPEN``
    (refuse everything), ``DISABLED`` (let everything through, record nothing) and
    ``METRICS_ONLY`` (let everything through, record and report, never open) are
    entered and left only by hand.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"

    @property
    def refuses_calls(self) -> bool:
        """True for the states that refuse every call."""
        return self in (CircuitState.OPEN, CircuitState.FORCED_OPEN)


class EventKind(enum.StrEnum):
    """What happened: a transition, a refused call, or a rate reaching its threshold."""

    STATE_TRANSITION = "state_transition"
    CALL_NOT_PERMITTED = "call_not_permitted"
    FAILURE_RATE_EXCEEDED = "failure_rate_exceeded"
    SLOW_CALL_RATE_EXCEEDED = "slow_call_rate_exceeded"


@dataclass(frozen=True, slots=True)
class CircuitBreakerEvent:
    """One event of one breaker, as listeners receive it.

    ``from_state``/``to_state`` are set for transitions; ``rate`` (a percentage) for
    the threshold events; ``state`` is the breaker's state after the event.
    """

    kind: EventKind
    breaker: str
    state: CircuitState
    from_state: CircuitState | None = None
    to_state: CircuitState | None = None
    rate: float | None = None
