"""Retries with tenacity that compose with a circuit breaker and cannot multiply load.

``@with_retry(...)`` builds a tenacity policy: each attempt goes through the breaker
(when one is given), a refusal by a breaker, a rate limit or a feature flag is never
retried (retrying it is exactly the load they exist to shed), and an optional
:class:`RetryBudget` caps retries at a fraction of recent calls, so that during an
outage retries do not multiply the traffic hitting the failing dependency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

import tenacity

from sergas_guard import validation
from sergas_guard.circuit_breaker.breaker import CircuitBreaker
from sergas_guard.circuit_breaker.window import TimeWindow
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import (
    CircuitOpenError,
    ConfigurationError,
    FeatureDisabledError,
    RateLimitExceeded,
)

__all__ = ["DEFAULT_WAIT", "NEVER_RETRIED", "RetryBudget", "with_retry"]

P = ParamSpec("P")
R = TypeVar("R")

#: Refusals that mean "back off", never "try again now".
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    RateLimitExceeded,
    FeatureDisabledError,
)

#: Exponential backoff from 0.1 s doubling up to 5 s, plus up to 0.1 s of jitter so
#: that callers who failed together do not retry together.
#: More attempts than this is a loop, not a retry policy.
MAX_ATTEMPTS = 1000

DEFAULT_WAIT = tenacity.wait_exponential(multiplier=0.1, max=5) + tenacity.wait_random(0, 0.1)


class RetryBudget:
    """Allows retries up to ``ratio`` of the calls of the last ``window`` seconds.

    ``min_retries`` more are always allowed per window, so a quiet service can still
    retry. Thread-safe; one budget may be shared by several retried functions.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        window: int = 10,
        min_retries: int = 3,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        validation.number(ratio, "ratio", minimum=0, maximum=1)
        validation.whole(window, "window", minimum=1, maximum=100_000)  # the breaker's bound
        validation.whole(min_retries, "min_retries", minimum=0)
        self.ratio = ratio
        self.min_retries = min_retries
        self.clock = clock
        # The breaker's time window counts attempts; its "failures" column counts the
        # retries among them, so first calls = calls - failures.
        self._window = TimeWindow(window)
        self._lock = threading.Lock()

    def record_call(self) -> None:
        """Count one first attempt (it earns ``ratio`` of a retry)."""
        with self._lock:
            self._window.add(self.clock.monotonic(), False, False)

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it; False means do not retry."""
        with self._lock:
            window = self._window
            window.refresh(self.clock.monotonic())
            first_calls = window.calls - window.failures
            if window.failures + 1 > self.ratio * first_calls + self.min_retries:
                return False
            window.add(self.clock.monotonic(), True, False)
            return True

    @property
    def retries(self) -> int:
        """Retries spent in the current window."""
        with self._lock:
            self._window.refresh(self.clock.monotonic())
            return self._window.failures


class _BudgetStop(tenacity.stop.stop_base):
    """Stops retrying when the budget is spent (consulted only when attempts remain)."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not self.budget.try_retry()


def _retryable(kinds: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    def retryable(error: BaseException) -> bool:
        return isinstance(error, kinds) and not isinstance(error, NEVER_RETRIED)

    return retryable


@overload
def with_retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def with_retry(
    *,
    attempts: int = 3,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    wait: tenacity.wait.wait_base | None = None,
    stop: tenacity.stop.stop_base | None = None,
    breaker: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    **tenacity_options: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def with_retry(
    fn: Callable[P, R] | None = None,
    /,
    *,
    attempts: int = 3,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    wait: tenacity.wait.wait_base | None = None,
    stop: tenacity.stop.stop_base | None = None,
    breaker: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    **tenacity_options: Any,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a sync or async function with tenacity; use bare or with options.

    ``attempts`` bounds the attempts (or pass a tenacity ``stop``); ``wait`` defaults
    to exponential backoff with jitter (0.1 s doubling up to 5 s); ``retry_on`` names
    the exceptions worth retrying. With ``breaker`` every attempt goes through it, and
    its refusal (CircuitOpenError) ends the retries at once, as do RateLimitExceeded
    and FeatureDisabledError. With ``budget`` a retry happens only while the budget
    allows. Other keyword arguments go to tenacity (``before_sleep``, ``sleep``...).
    The last error is re-raised as it is (never wrapped in tenacity's RetryError).
    Raises ConfigurationError naming the argument for ``attempts`` outside 1-1000, a
    ``retry_on`` that is not exception classes, or an option of the wrong type.
    """
    validation.whole(attempts, "attempts", minimum=1, maximum=MAX_ATTEMPTS)
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise ConfigurationError(
            f"retry_on must be an exception class or a tuple of them, not {retry_on!r:.80}",
            field="retry_on",
        )
    for field, value, kind in (
        ("wait", wait, tenacity.wait.wait_base),
        ("stop", stop, tenacity.stop.stop_base),
        ("breaker", breaker, CircuitBreaker),
        ("budget", budget, RetryBudget),
    ):
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{field} must be a {kind.__name__}, not {value!r:.80}", field=field
            )
    stopping: tenacity.stop.stop_base = stop or tenacity.stop_after_attempt(attempts)
    before = tenacity_options.pop("before", None)
    if budget is not None:
        # Evaluated after the attempt limit, so a budget is spent only on real retries.
        stopping = stopping | _BudgetStop(budget)

    def before_attempt(retry_state: tenacity.RetryCallState) -> None:
        if budget is not None and retry_state.attempt_number == 1:
            budget.record_call()
        if before is not None:
            before(retry_state)

    try:
        # tenacity builds its Retrying only when decorating; build one now to check the
        # options while the caller is still at construction.
        tenacity.Retrying(**tenacity_options)
        policy = tenacity.retry(
            stop=stopping,
            wait=wait if wait is not None else DEFAULT_WAIT,
            retry=tenacity.retry_if_exception(_retryable(kinds)),
            before=before_attempt,
            reraise=True,
            **tenacity_options,
        )
    except TypeError as exc:  # an option tenacity does not know
        raise ConfigurationError(f"with_retry: {exc}", field="tenacity_options") from None

    def decorate(target: Callable[P, R]) -> Callable[P, R]:
        attempt = breaker(target) if breaker is not None else target
        return cast(Callable[P, R], policy(attempt))

    return decorate if fn is None else decorate(fn)
