"""@rate_limited on sync and async functions."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest

from sergas_guard import ConfigurationError, RateLimitExceeded, rate_limited
from sergas_guard.clock import ManualClock
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter
from sergas_guard.storage import MemoryStorage


def test_sync_function_raises_when_over_the_limit() -> None:
    @rate_limited("2/minute")
    def greet(name: str) -> str:
        return f"hello {name}"

    assert greet("a") == "hello a"
    assert greet("b") == "hello b"
    with pytest.raises(RateLimitExceeded) as caught:
        greet("c")
    assert caught.value.retry_after > 0


async def test_async_function_raises_when_over_the_limit() -> None:
    calls = 0

    @rate_limited("1/minute")
    async def work() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await work() == 1
    with pytest.raises(RateLimitExceeded):
        await work()
    assert calls == 1  # a rejected call never runs the function


def test_signature_name_and_docs_are_kept() -> None:
    async def handler(item_id: int, q: str | None = None) -> dict[str, Any]:
        """Fetch an item."""
        return {"item_id": item_id, "q": q}

    wrapped = rate_limited("5/second")(handler)
    assert wrapped.__name__ == "handler"
    assert wrapped.__doc__ == "Fetch an item."
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert inspect.iscoroutinefunction(wrapped)


def test_key_and_cost_callables_receive_the_call_arguments() -> None:
    seen: list[tuple[str, int]] = []

    @rate_limited(
        "10/minute",
        key=lambda user, size: user,
        cost=lambda user, size: size,
    )
    def upload(user: str, size: int) -> None:
        seen.append((user, size))

    upload("alice", 6)
    upload("bob", 10)
    with pytest.raises(RateLimitExceeded) as caught:
        upload("alice", 5)
    assert caught.value.key == "alice"
    upload("alice", 4)
    assert seen == [("alice", 6), ("bob", 10), ("alice", 4)]


def test_functions_sharing_a_limiter_share_a_budget() -> None:
    shared = RateLimiter("3/minute", MemoryStorage(clock=ManualClock()))

    @rate_limited(shared)
    def a() -> str:
        return "a"

    @rate_limited(shared)
    def b() -> str:
        return "b"

    assert [a(), b(), a()] == ["a", "b", "a"]
    with pytest.raises(RateLimitExceeded):
        b()


def test_wait_mode_sleeps_until_admitted() -> None:
    @rate_limited("5/second", on_limit="wait", max_wait=5)
    def tick() -> float:
        return time.monotonic()

    stamps = [tick() for _ in range(10)]
    # Ten calls through a 5/second sliding window cannot all fit in the first second.
    assert stamps[-1] - stamps[0] > 0.3


async def test_wait_mode_gives_up_after_max_wait() -> None:
    @rate_limited(RateLimitConfig(max_requests=1, window_seconds=60), on_limit="wait", max_wait=0.1)
    async def rare() -> str:
        return "ok"

    assert await rare() == "ok"
    started = time.monotonic()
    with pytest.raises(RateLimitExceeded):
        await rare()
    assert time.monotonic() - started < 1.0  # did not sleep the minute


def test_bad_arguments_fail_at_decoration_time() -> None:
    with pytest.raises(ConfigurationError, match="on_limit"):
        rate_limited("1/second", on_limit="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_wait"):
        rate_limited("1/second", max_wait=-1)
    with pytest.raises(ConfigurationError, match="exceeds"):

        @rate_limited("3/second", cost=4)
        def too_big() -> None: ...

    with pytest.raises(ConfigurationError, match="rate"):

        @rate_limited("often")
        def vague() -> None: ...
