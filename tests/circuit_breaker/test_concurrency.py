"""Half-open under a crowd: exactly the permitted probes run, on every backend and face."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sergas_guard.circuit_breaker import CircuitOpenError, CircuitState
from tests.circuit_breaker.conftest import BreakerFactory
from tests.circuit_breaker.support import state

CALLERS = 200
PERMITTED = 5
PATIENCE = 30.0  # seconds a crowd may take to settle before the test gives up


async def test_200_async_callers_in_half_open_run_exactly_the_permitted_probes(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(permitted_calls_in_half_open=PERMITTED)
    breaker.transition_to_half_open()
    gate = asyncio.Event()
    settled = asyncio.Event()  # every caller is either refused or parked at the gate
    running = refused_so_far = 0

    def check() -> None:
        if running + refused_so_far == CALLERS:
            settled.set()

    def on_done(task: asyncio.Task[str]) -> None:
        nonlocal refused_so_far
        refused_so_far += not task.cancelled() and task.exception() is not None
        check()

    async def probe() -> str:
        nonlocal running
        running += 1
        check()
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.call(probe)) for _ in range(CALLERS)]
    for task in tasks:
        task.add_done_callback(on_done)
    await asyncio.wait_for(settled.wait(), PATIENCE)
    assert running == PERMITTED
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, CircuitOpenError)]
    assert results.count("ok") == PERMITTED
    assert len(refused) == CALLERS - PERMITTED
    assert {error.state for error in refused} == {"half_open"}
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.get_metrics()["not_permitted_calls"] == CALLERS - PERMITTED


def test_200_threads_in_half_open_run_exactly_the_permitted_probes(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(permitted_calls_in_half_open=PERMITTED)
    breaker.transition_to_half_open()
    gate = threading.Event()
    lock = threading.Lock()
    running = 0
    start = threading.Barrier(CALLERS)

    def probe() -> str:
        nonlocal running
        with lock:
            running += 1
        gate.wait(PATIENCE)
        return "ok"

    def caller() -> object:
        start.wait(PATIENCE)
        try:
            return breaker.call_sync(probe)
        except CircuitOpenError as error:
            return error

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        futures = [pool.submit(caller) for _ in range(CALLERS)]
        # Refused callers return at once, probes park at the gate: wait for both.
        deadline = time.monotonic() + PATIENCE
        while sum(f.done() for f in futures) + running < CALLERS:
            assert time.monotonic() < deadline, "the crowd never settled"
            time.sleep(0.005)
        with lock:
            assert running == PERMITTED
        gate.set()
        results = [f.result(PATIENCE) for f in futures]
    refused = [r for r in results if isinstance(r, CircuitOpenError)]
    assert results.count("ok") == PERMITTED
    assert len(refused) == CALLERS - PERMITTED
    assert {error.state for error in refused} == {"half_open"}
    assert state(breaker) is CircuitState.CLOSED


async def test_a_cancelled_probe_gives_its_slot_back(make_breaker: BreakerFactory) -> None:
    breaker = make_breaker(permitted_calls_in_half_open=1)
    breaker.transition_to_half_open()
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hang))
    await entered.wait()
    with pytest.raises(CircuitOpenError):
        await breaker.call(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.get_metrics()["probes_in_flight"] == 0
    assert await breaker.call(asyncio.sleep, 0, "probe") == "probe"
    assert state(breaker) is CircuitState.CLOSED


def test_a_probe_killed_by_a_base_exception_gives_its_slot_back(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(permitted_calls_in_half_open=1)
    breaker.transition_to_half_open()

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call_sync(interrupted)
    metrics = breaker.get_metrics()
    assert (metrics["state"], metrics["probes_in_flight"]) == ("half_open", 0)
    assert breaker.call_sync(lambda: "probe") == "probe"


async def test_a_probe_cancelled_inside_async_with_gives_its_slot_back(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(permitted_calls_in_half_open=1)
    breaker.transition_to_half_open()

    entered = asyncio.Event()

    async def guarded() -> None:
        async with breaker:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(guarded())
    await entered.wait()
    assert breaker.get_metrics()["probes_in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.get_metrics()["probes_in_flight"] == 0


def test_no_lock_is_held_while_the_protected_call_runs(make_breaker: BreakerFactory) -> None:
    breaker = make_breaker(window_size=100, minimum_calls=100)
    inside = threading.Event()
    leave = threading.Event()

    def long_call() -> str:
        inside.set()
        leave.wait(PATIENCE)
        return "long"

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(breaker.call_sync, long_call)
        assert inside.wait(PATIENCE)
        # While one call is in flight, others go through and metrics can be read.
        assert [breaker.call_sync(lambda: "quick") for _ in range(10)] == ["quick"] * 10
        assert breaker.get_metrics()["buffered_calls"] == 10
        leave.set()
        assert slow.result(PATIENCE) == "long"
