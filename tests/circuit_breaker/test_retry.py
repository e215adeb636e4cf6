"""with_retry: tenacity policies composed with the breaker, refusals never retried, a budget."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard import ConfigurationError
from sergas_guard.circuit_breaker import (
    CircuitOpenError,
    CircuitState,
    RetryBudget,
    with_retry,
)
from sergas_guard.clock import ManualClock
from sergas_guard.errors import FeatureDisabledError, GuardError, RateLimitExceeded
from tests.circuit_breaker.support import Boom, breaker, state

NO_WAIT = tenacity.wait_none()


class Flaky:
    """Fails its first ``failures`` calls, then answers."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or Boom("transient")
        self.calls = 0

    def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return value


def test_retries_until_success_and_keeps_the_signature() -> None:
    flaky = Flaky(2)

    @with_retry(attempts=3, wait=NO_WAIT)
    def fetch(value: str = "ok") -> str:
        return flaky(value)

    assert fetch("data") == "data"
    assert flaky.calls == 3
    assert list(inspect.signature(fetch).parameters) == ["value"]


def test_gives_up_after_the_attempts_with_the_original_error() -> None:
    flaky = Flaky(10)
    with pytest.raises(Boom, match="transient"):
        with_retry(attempts=4, wait=NO_WAIT)(flaky)()
    assert flaky.calls == 4


def test_bare_decorator_uses_the_defaults() -> None:
    calls = 0

    @with_retry
    def once() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert once() == 1


async def test_async_functions_are_retried_without_blocking() -> None:
    flaky = Flaky(2)

    @with_retry(attempts=3, wait=NO_WAIT)
    async def fetch() -> str:
        return flaky()

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch() == "ok"
    assert flaky.calls == 3


@pytest.mark.parametrize(
    "refusal",
    [
        CircuitOpenError("dep", retry_after=3.0),
        RateLimitExceeded(key="k", limit="1/second", retry_after=1.0),
        FeatureDisabledError("beta"),
    ],
)
def test_refusals_are_never_retried(refusal: GuardError) -> None:
    flaky = Flaky(5, refusal)
    with pytest.raises(type(refusal)):
        with_retry(attempts=5, wait=NO_WAIT, retry_on=Exception)(flaky)()
    assert flaky.calls == 1


def test_only_the_named_exceptions_are_retried() -> None:
    flaky = Flaky(3, KeyError("not transient"))
    with pytest.raises(KeyError):
        with_retry(attempts=5, wait=NO_WAIT, retry_on=(Boom, TimeoutError))(flaky)()
    assert flaky.calls == 1


def test_with_a_breaker_each_attempt_counts_and_an_opening_ends_the_retries() -> None:
    clock = ManualClock()
    target = breaker(clock)  # opens after 4 calls with >= 50% failures
    flaky = Flaky(100)
    retried = with_retry(attempts=10, wait=NO_WAIT, breaker=target)(flaky)
    with pytest.raises(CircuitOpenError):
        retried()
    assert flaky.calls == 4  # the 5th attempt was refused by the breaker, and not retried
    assert state(target) is CircuitState.OPEN


async def test_with_a_breaker_the_async_face_composes_too() -> None:
    target = breaker()
    flaky = Flaky(1)

    @with_retry(attempts=3, wait=NO_WAIT, breaker=target)
    async def fetch() -> str:
        return flaky()

    assert await fetch() == "ok"
    metrics = target.get_metrics()
    assert (metrics["buffered_calls"], metrics["failed_calls"]) == (2, 1)


def test_tenacity_options_pass_through() -> None:
    seen: list[int] = []
    flaky = Flaky(2)
    with_retry(
        attempts=3,
        wait=NO_WAIT,
        before_sleep=lambda retry_state: seen.append(retry_state.attempt_number),
    )(flaky)()
    assert seen == [1, 2]


def test_a_retry_budget_stops_retries_during_an_outage() -> None:
    clock = ManualClock()
    budget = RetryBudget(0.2, window=10, min_retries=1, clock=clock)
    down = Flaky(10_000)
    retried = with_retry(attempts=5, wait=NO_WAIT, budget=budget)(down)
    for _ in range(20):
        with pytest.raises(Boom):
            retried()
    # 20 calls earn 0.2 * 20 + 1 = 5 retries, not the 80 that 5 attempts each would make.
    assert down.calls - 20 == 5
    assert budget.retries == 5
    clock.advance(10.0)  # the window moves on and the budget refills
    assert budget.retries == 0


@settings(max_examples=60, deadline=None)
@given(
    ratio=st.sampled_from([0.0, 0.1, 0.25, 1.0]),
    min_retries=st.integers(0, 3),
    plan=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.0, 0.4, 3.0])), max_size=40),
)
def test_retries_never_exceed_the_budget_in_any_window(
    ratio: float, min_retries: int, plan: list[tuple[int, float]]
) -> None:
    clock = ManualClock()
    window = 5
    budget = RetryBudget(ratio, window=window, min_retries=min_retries, clock=clock)
    history: list[tuple[float, str]] = []
    for failures, pause in plan:
        flaky = Flaky(failures)

        def attempt(flaky: Flaky = flaky) -> str:
            history.append((clock.monotonic(), "first" if flaky.calls == 0 else "retry"))
            return flaky()

        with contextlib.suppress(Boom):
            with_retry(attempts=5, wait=NO_WAIT, budget=budget)(attempt)()
        clock.advance(pause)
    # At every retry, the retries of the seconds the window covers (this one included)
    # stay within ratio * first calls + min_retries.
    for index, (at, kind) in enumerate(history):
        if kind != "retry":
            continue
        covered = [k for when, k in history[: index + 1] if when // 1 > at // 1 - window]
        assert covered.count("retry") <= ratio * covered.count("first") + min_retries


def test_bad_retry_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        with_retry(attempts=0)
    with pytest.raises(ConfigurationError):
        RetryBudget(1.5)
    with pytest.raises(ConfigurationError):
        RetryBudget(0.1, window=0)
    with pytest.raises(ConfigurationError):
        RetryBudget(0.1, min_retries=-1)
