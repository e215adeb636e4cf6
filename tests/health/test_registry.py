"""The registry: concurrency, timeouts, failures as results, caching and single flight."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.clock import ManualClock
from sergas_guard.errors import GuardError, HealthCheckError
from sergas_guard.health import (
    CheckResult,
    DuplicateHealthCheckError,
    HealthCheck,
    HealthCheckRegistry,
    HealthStatus,
    Observation,
    ServiceHealthCheck,
)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that blocked sync checks wait for; set at teardown so threads end."""
    event = threading.Event()
    yield event
    event.set()


def test_register_rejects_duplicates_and_non_checks() -> None:
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("api", lambda: True))
    with pytest.raises(DuplicateHealthCheckError, match="api"):
        registry.register(ServiceHealthCheck("api", lambda: True))
    with pytest.raises(ValueError, match="api"):  # also a ValueError, for plain callers
        registry.register(ServiceHealthCheck("api", lambda: False))
    with pytest.raises(HealthCheckError):
        registry.register("api")  # type: ignore[arg-type]
    assert registry.names == ["api"]
    assert len(registry) == 1
    assert "api" in registry
    registry.unregister("api")
    assert "api" not in registry
    with pytest.raises(GuardError):
        registry.unregister("api")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "a:b"}, "must not contain"),
        ({"name": "ok", "timeout": 0}, "positive"),
        ({"name": "ok", "tags": "ready"}, "list of strings"),
    ],
)
def test_bad_check_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(HealthCheckError, match=message):
        ServiceHealthCheck(check_func=lambda: True, **kwargs)  # type: ignore[arg-type]


async def test_function_outcomes_are_read_as_statuses() -> None:
    async def async_degraded() -> HealthStatus:
        return HealthStatus.DEGRADED

    def with_value() -> Observation:
        return Observation(HealthStatus.HEALTHY, observed_value=12, observed_unit="items")

    registry = HealthCheckRegistry()
    for name, func in [
        ("true", lambda: True),
        ("false", lambda: False),
        ("none", lambda: None),
        ("string", lambda: "degraded"),
        ("async", async_degraded),
        ("observation", with_value),
        ("result", lambda: CheckResult("x", HealthStatus.UNHEALTHY, message="queue stuck")),
        ("nonsense", lambda: 42),
        ("mapping", lambda: {"status": "degraded", "message": "lagging", "lag_s": 12}),
    ]:
        registry.register(ServiceHealthCheck(name, func))  # type: ignore[arg-type]
    results = await registry.check_all()
    statuses = {name: result.status.value for name, result in results.items()}
    assert statuses == {
        "true": "healthy",
        "false": "unhealthy",
        "none": "healthy",
        "string": "degraded",
        "async": "degraded",
        "observation": "healthy",
        "result": "unhealthy",
        "nonsense": "unhealthy",
        "mapping": "degraded",
    }
    assert results["mapping"].message == "lagging"
    assert results["mapping"].details == {"lag_s": 12}
    assert results["observation"].observed_value == 12
    assert results["result"].message == "queue stuck"
    assert "int" in results["nonsense"].message


async def test_checks_run_concurrently() -> None:
    # Each check waits for the other to have started: run one after the other, both
    # would time out.
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def waiting_for(me: str, other: str) -> ServiceHealthCheck:
        async def probe() -> bool:
            started[me].set()
            await started[other].wait()
            return True

        return ServiceHealthCheck(me, probe, timeout=2)

    registry = HealthCheckRegistry()
    registry.register(waiting_for("a", "b"))
    registry.register(waiting_for("b", "a"))
    results = await registry.check_all()
    assert [r.status for r in results.values()] == [HealthStatus.HEALTHY] * 2


async def test_raising_and_hanging_checks_become_results() -> None:
    def broken() -> bool:
        raise RuntimeError("queue consumer crashed: token=abc123")

    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("broken", broken))
    registry.register(ServiceHealthCheck("hangs", hangs, timeout=0.05, critical=False))
    results = await registry.check_all()
    assert results["broken"].status is HealthStatus.UNHEALTHY
    assert results["broken"].message.startswith("RuntimeError: queue consumer crashed")
    assert "abc123" not in results["broken"].message  # scrubbed
    assert results["hangs"].status is HealthStatus.UNHEALTHY
    assert results["hangs"].message == "timed out after 0.05s"
    assert registry.get_summary(results)["status"] == "unhealthy"


async def test_a_blocking_sync_check_does_not_block_the_loop(release: threading.Event) -> None:
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("blocks", release.wait, timeout=0.1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    results = await registry.check_all()
    ticking.cancel()
    assert results["blocks"].status is HealthStatus.UNHEALTHY
    assert "timed out" in results["blocks"].message
    assert ticks > 10  # the loop kept running while the check blocked its thread
    # Still blocked: the check is not started in a second thread, it reports why.
    again = await registry.check("blocks", use_cache=False)
    assert "has not returned yet" in again.message
    release.set()  # the stuck thread returns; then the check runs (and passes) again
    for _ in range(500):
        result = await registry.check("blocks", use_cache=False)
        if result.is_healthy:
            break
        await asyncio.sleep(0.01)
    assert result.is_healthy, result.message


async def test_the_overall_deadline_bounds_a_check_that_ignores_its_timeout() -> None:
    class Stubborn(HealthCheck):
        # Overrides check() itself and never honours its timeout.
        async def check(self) -> CheckResult:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    registry = HealthCheckRegistry(timeout=0.1)
    registry.register(Stubborn("stubborn", timeout=5))
    registry.register(ServiceHealthCheck("fine", lambda: True))
    results = await registry.check_all()
    assert results["stubborn"].status is HealthStatus.UNHEALTHY
    assert "deadline of 0.1s" in results["stubborn"].message
    assert results["fine"].is_healthy
    await registry.stop()


async def test_registry_bounds_an_overridden_check_by_its_timeout() -> None:
    class Slow(HealthCheck):
        async def check(self) -> CheckResult:
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

    registry = HealthCheckRegistry()
    registry.register(Slow("slow", timeout=0.05))
    result = await registry.check("slow")
    assert result.message == "timed out after 0.05s"


async def test_results_are_cached_with_separate_pass_and_fail_ttls() -> None:
    clock = ManualClock()
    calls = {"ok": 0, "bad": 0}

    def counted(name: str, healthy: bool) -> ServiceHealthCheck:
        def probe() -> bool:
            calls[name] += 1
            return healthy

        return ServiceHealthCheck(name, probe)

    registry = HealthCheckRegistry(cache_ttl=10, failure_cache_ttl=2, clock=clock)
    registry.register(counted("ok", True))
    registry.register(counted("bad", False))
    await registry.check_all(use_cache=True)
    await registry.check_all(use_cache=True)
    assert calls == {"ok": 1, "bad": 1}
    clock.advance(2.5)  # past the failure TTL only
    await registry.check_all(use_cache=True)
    assert calls == {"ok": 1, "bad": 2}
    clock.advance(8)  # past the pass TTL too
    await registry.check_all(use_cache=True)
    assert calls == {"ok": 2, "bad": 3}
    await registry.check_all()  # a direct call wants fresh results
    assert calls == {"ok": 3, "bad": 4}
    assert set(registry.last_results()) == {"ok", "bad"}


async def test_concurrent_callers_share_one_run() -> None:
    gate = asyncio.Event()
    runs = 0

    async def probe() -> bool:
        nonlocal runs
        runs += 1
        await gate.wait()
        return True

    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0)
    registry.register(ServiceHealthCheck("shared", probe))
    callers = [asyncio.create_task(registry.check_all()) for _ in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*callers)
    assert runs == 1
    assert all(r["shared"].is_healthy for r in results)
    await registry.check_all()  # TTL 0: a later caller runs it again
    assert runs == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_run() -> None:
    gate = asyncio.Event()
    registry = HealthCheckRegistry()

    async def probe() -> bool:
        await gate.wait()
        return True

    registry.register(ServiceHealthCheck("shared", probe))
    first = asyncio.create_task(registry.check_all())
    second = asyncio.create_task(registry.check_all())
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second)["shared"].is_healthy


async def test_selection_by_tags_and_names() -> None:
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("db", lambda: True))  # default tag: ready
    registry.register(ServiceHealthCheck("search", lambda: True, tags=["external"]))
    assert list(await registry.check_all(tags=["ready"])) == ["db"]
    assert list(await registry.check_all(tags=["external", "ready"])) == ["db", "search"]
    assert list(await registry.check_all(names=["search"])) == ["search"]
    with pytest.raises(HealthCheckError, match="nope"):
        await registry.check_all(names=["nope"])


async def test_background_runner_refreshes_and_requests_read_its_results() -> None:
    clock = ManualClock()
    refreshed = asyncio.Event()
    runs = 0

    def probe() -> bool:
        nonlocal runs
        runs += 1
        if runs >= 3:
            refreshed.set()
        return True

    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0, clock=clock)
    registry.register(ServiceHealthCheck("bg", probe))
    async with registry.running(interval=0.01):
        await asyncio.wait_for(refreshed.wait(), 5)
        with pytest.raises(HealthCheckError, match="already running"):
            registry.start(1)
        before = runs
        # TTL is 0, yet requests read the runner's results instead of probing.
        for _ in range(20):
            assert (await registry.check_all(use_cache=True))["bg"].is_healthy
        assert runs - before <= 2  # only the runner's own refreshes, if any
    stopped_at = runs
    await asyncio.sleep(0.05)
    assert runs == stopped_at


async def test_status_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    healthy = False
    registry = HealthCheckRegistry(cache_ttl=0, failure_cache_ttl=0)
    registry.register(ServiceHealthCheck("flaky", lambda: healthy))
    with caplog.at_level("INFO", logger="sergas_guard.health"):
        for _ in range(3):
            await registry.check_all()
        healthy = True
        for _ in range(3):
            await registry.check_all()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "health check flaky is unhealthy: check returned False",
        "health check flaky recovered (was unhealthy)",
    ]


@given(
    ttl=st.integers(0, 5),
    failure_ttl=st.integers(0, 5),
    steps=st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=25),
)
@settings(max_examples=60, deadline=None)
def test_cache_reruns_exactly_when_the_result_has_expired(
    ttl: int, failure_ttl: int, steps: list[tuple[int, bool]]
) -> None:
    # Model: a cached result of age a is served iff a < its status's TTL.
    clock = ManualClock()
    state = {"healthy": True, "runs": 0}

    async def probe() -> bool:
        state["runs"] += 1
        return bool(state["healthy"])

    registry = HealthCheckRegistry(cache_ttl=ttl, failure_cache_ttl=failure_ttl, clock=clock)
    registry.register(ServiceHealthCheck("c", probe))

    async def scenario() -> None:
        expected_runs, last_at, last_healthy = 0, None, True
        for advance, healthy in steps:
            clock.advance(advance)
            state["healthy"] = healthy
            now = clock.monotonic()
            keep = ttl if last_healthy else failure_ttl
            if last_at is None or now - last_at >= keep:
                expected_runs, last_at, last_healthy = expected_runs + 1, now, healthy
            result = await registry.check("c", use_cache=True)
            assert result.is_healthy == last_healthy
            assert state["runs"] == expected_runs

    asyncio.run(scenario())
