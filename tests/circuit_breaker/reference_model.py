"""A deliberately naive model of the breaker's rules, for the stateful tests to compare against.

It keeps every outcome in a list and recomputes the window by slicing or filtering,
so it shares no code (and no ring-buffer arithmetic) with the implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sergas_guard.circuit_breaker import CircuitBreakerConfig, CircuitState


@dataclass
class Outcome:
    at: float
    failed: bool
    slow: bool


@dataclass
class ModelCall:
    """A call the model admitted: the epoch (transition count) and probe it was admitted under."""

    epoch: int
    probe: int | None


@dataclass
class BreakerModel:
    config: CircuitBreakerConfig
    state: CircuitState = CircuitState.CLOSED
    since: float = 0.0
    epoch: int = 0
    opens: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    half_open_outcomes: list[Outcome] = field(default_factory=list)
    probes: dict[int, float] = field(default_factory=dict)
    probe_counter: int = 0
    rejected: int = 0
    not_permitted: int = 0

    # -- derived ----------------------------------------------------------------------

    def wait(self) -> float:
        base = self.config.wait_duration_in_open
        wait = base * self.config.wait_backoff_multiplier ** min(self.opens - 1, 30)
        cap = self.config.max_wait_duration_in_open
        return wait if cap is None else min(wait, cap)

    def window(self, now: float) -> list[Outcome]:
        if self.config.window_type == "count":
            return self.outcomes[-self.config.window_size :]
        horizon = math.floor(now) - self.config.window_size
        return [o for o in self.outcomes if math.floor(o.at) > horizon]

    def over_threshold(self, outcomes: list[Outcome]) -> bool:
        calls = len(outcomes)
        failed = sum(o.failed for o in outcomes)
        slow = sum(o.slow for o in outcomes)
        return (
            failed * 100.0 / calls >= self.config.failure_rate_threshold
            or slow * 100.0 / calls >= self.config.slow_call_rate_threshold
        )

    # -- rules --------------------------------------------------------------------------

    def go(self, target: CircuitState, now: float) -> None:
        self.state = target
        self.since = now
        self.epoch += 1
        self.probes = {}
        self.half_open_outcomes = []
        if target is CircuitState.OPEN:
            self.opens += 1
        if target in (CircuitState.CLOSED, CircuitState.DISABLED, CircuitState.METRICS_ONLY):
            self.opens = 0
            self.outcomes = []

    def tick(self, now: float) -> None:
        if self.state is CircuitState.OPEN and now >= self.since + self.wait():
            self.go(CircuitState.HALF_OPEN, now)
        if self.state is CircuitState.HALF_OPEN:
            limit = self.config.max_wait_in_half_open
            if limit > 0 and now >= self.since + limit:
                self.go(CircuitState.OPEN, now)
            else:
                self.probes = {p: end for p, end in self.probes.items() if end > now}

    def acquire(self, now: float) -> ModelCall | None:
        self.tick(now)
        if self.state in (CircuitState.CLOSED, CircuitState.DISABLED, CircuitState.METRICS_ONLY):
            return ModelCall(self.epoch, None)
        if self.state is CircuitState.HALF_OPEN:
            taken = len(self.probes) + len(self.half_open_outcomes)
            if taken < self.config.permitted_calls_in_half_open:
                self.probe_counter += 1
                self.probes[self.probe_counter] = now + self.config.probe_timeout
                return ModelCall(self.epoch, self.probe_counter)
            self.not_permitted += 1
        else:
            self.rejected += 1
        return None

    def record(self, now: float, call: ModelCall, duration: float, failed: bool) -> None:
        self.tick(now)
        if call.epoch != self.epoch:
            return
        outcome = Outcome(now, failed, duration >= self.config.slow_call_duration)
        if self.state in (CircuitState.CLOSED, CircuitState.METRICS_ONLY):
            self.outcomes.append(outcome)
            window = self.window(now)
            if (
                self.state is CircuitState.CLOSED
                and len(window) >= self.config.minimum_calls
                and self.over_threshold(window)
            ):
                self.go(CircuitState.OPEN, now)
        elif self.state is CircuitState.HALF_OPEN and call.probe in self.probes:
            del self.probes[call.probe]
            self.half_open_outcomes.append(outcome)
            if len(self.half_open_outcomes) >= self.config.permitted_calls_in_half_open:
                tripped = self.over_threshold(self.half_open_outcomes)
                self.go(CircuitState.OPEN if tripped else CircuitState.CLOSED, now)

    def release(self, now: float, call: ModelCall) -> None:
        self.tick(now)
        if call.epoch == self.epoch and call.probe is not None:
            self.probes.pop(call.probe, None)

    def transition(self, now: float, target: CircuitState) -> None:
        self.tick(now)
        if target is not self.state:
            self.go(target, now)

    def reset(self, now: float) -> None:
        if self.state is not CircuitState.CLOSED:
            self.go(CircuitState.CLOSED, now)
        else:
            self.epoch += 1
            self.outcomes = []
        self.opens = self.rejected = self.not_permitted = 0

    def counts(self, now: float) -> tuple[int, int, int]:
        """(calls, failed, slow) as metrics report them: the window, or the probes in half-open."""
        self.tick(now)
        judged = (
            self.half_open_outcomes if self.state is CircuitState.HALF_OPEN else self.window(now)
        )
        return len(judged), sum(o.failed for o in judged), sum(o.slow for o in judged)

    def retry_after(self, now: float) -> float:
        if self.state is CircuitState.OPEN:
            return max(0.0, self.since + self.wait() - now)
        return self.config.wait_duration_in_open
