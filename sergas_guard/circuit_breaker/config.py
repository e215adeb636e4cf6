"""Configuration of a circuit breaker, with resilience4j's vocabulary and defaults.

A breaker judges the last ``window_size`` calls (``window_type="count"``) or the calls
of the last ``window_size`` seconds (``window_type="time"``). Once the window holds at
least ``minimum_calls`` calls and the failure rate or the slow-call rate reaches its
threshold, the breaker opens for ``wait_duration_in_open`` seconds (growing by
``wait_backoff_multiplier`` on each consecutive opening, up to
``max_wait_duration_in_open``), then lets ``permitted_calls_in_half_open`` probes
through and closes or re-opens on their outcome.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sergas_guard.config import GuardModel
from sergas_guard.errors import ConfigurationError
from sergas_guard.validation import MAX_SECONDS

__all__ = ["CircuitBreakerConfig", "WindowType"]

WindowType = Literal["count", "time"]

MAX_BACKOFF_EXPONENT = 30
#: The most calls a setting may count: a million probes or a million calls before
#: judging are already far past any use, and counts stay small numbers in Redis.
MAX_CALLS = 1_000_000

# Names other breakers use -> ours (failure_threshold expands to three fields).
_SHORTHANDS = {
    "failure_threshold": "window_size",
    "recovery_timeout": "wait_duration_in_open",
    "half_open_max_calls": "permitted_calls_in_half_open",
    "expected_exception": "record_exceptions",
    "expected_exceptions": "record_exceptions",
}

ExceptionTypes = tuple[type[BaseException], ...]


def _exception_type(value: Any) -> Any:
    """Accept an exception class or its dotted name (``"httpx.ConnectError"``, from TOML)."""
    if isinstance(value, str):
        module_name, _, attribute = value.rpartition(".")
        module_name = module_name or "builtins"
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            raise ValueError(f"{value!r} names no importable exception class") from None
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise ValueError(f"{value!r} is not an exception class")
    return value


class CircuitBreakerConfig(GuardModel):
    """How a circuit breaker decides; every field is validated at construction.

    Raises :class:`~sergas_guard.errors.ConfigurationError` naming the field when a
    value is out of range or two values contradict each other: durations are finite
    seconds, at most 100 years (:data:`~sergas_guard.validation.MAX_SECONDS`), counts
    whole numbers up to :data:`MAX_CALLS`, and a bool is not a number.
    """

    window_type: WindowType = "count"
    #: Calls (count window) or whole seconds (time window) judged together.
    window_size: int = Field(default=100, ge=1, le=100_000)
    #: Calls the window must hold before a rate can open the breaker.
    minimum_calls: int = Field(default=100, ge=1, le=MAX_CALLS)
    #: Percentage of failed calls at or above which the breaker opens.
    failure_rate_threshold: float = Field(default=50.0, gt=0, le=100)
    #: A call lasting at least this many seconds is slow.
    slow_call_duration: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    #: Percentage of slow calls at or above which the breaker opens.
    slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100)
    #: Seconds the breaker stays open before letting probes through.
    wait_duration_in_open: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    #: Each consecutive opening waits this many times longer (1 = constant wait).
    wait_backoff_multiplier: float = Field(default=1.0, ge=1, le=10)
    #: Upper bound of the backed-off wait (None = no bound beyond the multiplier's).
    max_wait_duration_in_open: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    #: Probes let through in half-open; their outcome closes or re-opens the breaker.
    permitted_calls_in_half_open: int = Field(default=10, ge=1, le=MAX_CALLS)
    #: Seconds half-open may last before re-opening (0 = wait for every probe).
    max_wait_in_half_open: float = Field(default=0.0, ge=0, le=MAX_SECONDS)
    #: A probe that neither reports nor gives its slot back within this many seconds
    #: is presumed dead (its process crashed) and its slot is given to another caller.
    probe_timeout: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    #: Exceptions that count as failures (empty = every Exception); others count as success.
    record_exceptions: ExceptionTypes = ()
    #: Exceptions that count as neither success nor failure (checked first).
    ignore_exceptions: ExceptionTypes = ()
    #: ``record_result(value) -> True`` marks a returned value as a failure (e.g. an HTTP 503).
    record_result: Callable[[Any], bool] | None = None
    #: Seconds a breaker keeps to local state after its shared store failed, before retrying it.
    storage_retry_interval: float = Field(default=5.0, gt=0, le=MAX_SECONDS)
    #: Seconds a process may admit or refuse calls from the state the shared store last
    #: returned, without asking it again (0 = ask before every call: two round trips).
    shared_state_max_age: float = Field(default=1.0, ge=0, le=MAX_SECONDS)
    #: Calls a process may run at once on that cached state; more wait for the store's
    #: answer. Bounds the calls a process starts after a peer opened the breaker.
    shared_state_max_calls: int = Field(default=20, ge=1, le=MAX_CALLS)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """Accept the names pybreaker-style breakers use, translated to ours.

        ``failure_threshold=N`` ("open after N failures in a row") becomes a count
        window of N calls that opens at 100 % failures; ``recovery_timeout`` is
        ``wait_duration_in_open``; ``half_open_max_calls`` is
        ``permitted_calls_in_half_open``; ``expected_exception(s)`` is
        ``record_exceptions``. Giving a shorthand and its own name together is an error.
        """
        if not isinstance(data, dict) or not _SHORTHANDS.keys() & data.keys():
            return data
        data = dict(data)
        for shorthand, meaning in _SHORTHANDS.items():
            if shorthand not in data:
                continue
            value = data.pop(shorthand)
            targets = (
                {"window_size": value, "minimum_calls": value, "failure_rate_threshold": 100.0}
                if shorthand == "failure_threshold"
                else {meaning: value}
            )
            clash = targets.keys() & data.keys()
            if clash:
                raise ConfigurationError(
                    f"{shorthand} and {sorted(clash)[0]} say the same thing; give one",
                    field=shorthand,
                )
            data.update(targets)
        return data

    @field_validator("record_exceptions", "ignore_exceptions", mode="before")
    @classmethod
    def _exception_types(cls, value: Any) -> Any:
        if isinstance(value, (str, type)):
            value = (value,)
        return tuple(_exception_type(item) for item in value)

    @model_validator(mode="after")
    def _consistent(self) -> CircuitBreakerConfig:
        if self.window_type == "count" and self.minimum_calls > self.window_size:
            raise ConfigurationError(
                f"minimum_calls ({self.minimum_calls}) cannot exceed a count window of "
                f"{self.window_size} calls: the breaker could never open",
                field="minimum_calls",
            )
        cap = self.max_wait_duration_in_open
        if cap is not None and cap < self.wait_duration_in_open:
            raise ConfigurationError(
                "max_wait_duration_in_open must be at least wait_duration_in_open",
                field="max_wait_duration_in_open",
            )
        return self

    def open_wait(self, consecutive_opens: int) -> float:
        """Seconds the breaker stays open on its ``consecutive_opens``-th opening in a row."""
        # The exponent is bounded so a long outage cannot overflow the float.
        exponent = min(max(0, consecutive_opens - 1), MAX_BACKOFF_EXPONENT)
        wait = self.wait_duration_in_open * self.wait_backoff_multiplier**exponent
        cap = self.max_wait_duration_in_open
        return wait if cap is None else min(wait, cap)

    def counts_as_failure(self, error: BaseException) -> bool | None:
        """True for a failure, False for a success, None when the error is ignored."""
        if not isinstance(error, Exception) or isinstance(error, self.ignore_exceptions):
            return None
        if not self.record_exceptions:
            return True
        return isinstance(error, self.record_exceptions)
