"""Functions the multi-process tests run in spawned worker processes (hence importable)."""

from __future__ import annotations

import contextlib
import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from sergas_guard.circuit_breaker import CircuitBreaker, CircuitOpenError
from sergas_guard.circuit_breaker.redis_store import RedisBreakerStore
from sergas_guard.clock import ManualClock
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.circuit_breaker.support import Boom, config, fail, succeed

PATIENCE = 30.0


def _breaker(url: str, name: str, **overrides: Any) -> CircuitBreaker:
    storage = RedisStorage(url, socket_timeout=5.0, connect_timeout=5.0)
    return CircuitBreaker(name, config(**overrides), storage=storage)


def _try(breaker: CircuitBreaker) -> str:
    try:
        breaker.call_sync(succeed)
    except CircuitOpenError as refused:
        return refused.state
    return "admitted"


def failing_worker(url: str, name: str, go: Event, results: Queue[Any]) -> None:
    """Wait for ``go``, then fail enough calls to open the shared breaker."""
    breaker = _breaker(url, name)
    results.put(("failing", "ready"))
    if not go.wait(PATIENCE):
        results.put(("failing", "gave up waiting"))
        return
    # Fail until the breaker refuses: the others' successes are in the shared window too.
    with contextlib.suppress(CircuitOpenError):
        for _ in range(10):
            with contextlib.suppress(Boom):
                breaker.call_sync(fail)
    results.put(("failing", breaker.state.value))


OBSERVER_MAX_AGE = 0.2


def observing_worker(
    url: str, name: str, role: str, opened: Event, closed: Event, results: Queue[Any]
) -> None:
    """Make one call before the failures, one after ``opened`` and one after ``closed``.

    A process decides from the state its last reply carried for up to
    ``shared_state_max_age`` seconds; each call after a peer's move waits that long.
    """
    breaker = _breaker(url, name, shared_state_max_age=OBSERVER_MAX_AGE)
    results.put((role, _try(breaker)))
    for phase in (opened, closed):
        if not phase.wait(PATIENCE):
            results.put((role, "gave up waiting"))
            return
        time.sleep(OBSERVER_MAX_AGE)
        results.put((role, _try(breaker)))


def probe_and_die(url: str, name: str, now: float) -> None:
    """Take a half-open probe slot and die without reporting (as a crashed worker would)."""
    storage = RedisStorage(url, socket_timeout=5.0, connect_timeout=5.0)
    store = RedisBreakerStore(storage, clock=ManualClock(now))
    breaker = CircuitBreaker(name, config(probe_timeout=3.0), storage=store)
    breaker.__enter__()
    os._exit(0)


def half_open_crowd(url: str, name: str, threads: int, gate: Event, results: Queue[Any]) -> None:
    """``threads`` callers at once through a half-open breaker; probes wait at ``gate``."""
    from concurrent.futures import ThreadPoolExecutor

    # The probes wait at the gate as long as the test needs: that must not make them slow.
    breaker = _breaker(url, name, permitted_calls_in_half_open=5, slow_call_duration=PATIENCE)

    def probe() -> str:
        results.put(("probe", os.getpid()))
        gate.wait(PATIENCE)
        return "ok"

    def caller() -> None:
        try:
            breaker.call_sync(probe)
        except CircuitOpenError:
            results.put(("refused", os.getpid()))

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(caller) for _ in range(threads)]:
            future.result()


def stale_view_crowd(
    url: str,
    name: str,
    max_calls: int,
    threads: int,
    opened: Event,
    release: Event,
    results: Queue[Any],
) -> None:
    """Learn CLOSED, then after a peer opened the breaker send ``threads`` calls at once.

    The calls that run wait at ``release``, so none of them reports before the crowd
    has been decided. Reports each call ("admitted" / "refused"), then one last call.
    """
    from concurrent.futures import ThreadPoolExecutor

    breaker = _breaker(url, name, shared_state_max_age=60.0, shared_state_max_calls=max_calls)
    results.put((os.getpid(), _try(breaker)))  # the view now says CLOSED
    if not opened.wait(PATIENCE):
        results.put((os.getpid(), "gave up waiting"))
        return

    def held() -> str:
        results.put((os.getpid(), "admitted"))
        release.wait(PATIENCE)
        return "ok"

    def caller() -> None:
        try:
            breaker.call_sync(held)
        except CircuitOpenError:
            results.put((os.getpid(), "refused"))

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(caller) for _ in range(threads)]:
            future.result()
    results.put((os.getpid(), "after: " + _try(breaker)))


def busy_caller(
    url: str, name: str, max_calls: int, threads: int, stop: Event, results: Queue[Any]
) -> None:
    """``threads`` threads call in a loop until ``stop``; report when each admitted call began.

    The time is read *before* the call (CLOCK_MONOTONIC, one clock for every process of
    the host), so it is never later than the moment the call was admitted.
    """
    from concurrent.futures import ThreadPoolExecutor

    breaker = _breaker(url, name, shared_state_max_age=60.0, shared_state_max_calls=max_calls)
    breaker.call_sync(succeed)

    def loop() -> list[float]:
        admitted = []
        while not stop.is_set():
            began = time.monotonic()
            try:
                breaker.call_sync(succeed)
            except CircuitOpenError:
                time.sleep(0.001)  # refused at once, without I/O: do not spin the host
                continue
            admitted.append(began)
        return admitted

    results.put(("ready", os.getpid()))
    with ThreadPoolExecutor(threads) as pool:
        loops = [pool.submit(loop) for _ in range(threads)]
        starts = sorted(start for running in loops for start in running.result())
    results.put(("admitted", starts))
