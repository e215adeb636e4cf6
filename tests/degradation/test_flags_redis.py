"""Flags shared through a real redis-server: every worker sees a change within a second."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sergas_guard.clock import ManualClock
from sergas_guard.degradation import DegradationLevel, DegradationManager, FeatureFlags, LevelChange
from sergas_guard.errors import StorageUnavailable
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def new_storage() -> Iterator[Callable[[str], RedisStorage]]:
    """Make RedisStorage objects whose sync clients are closed after the test."""
    made: list[RedisStorage] = []

    def make(url: str) -> RedisStorage:
        # Patient timeouts: these tests are about sharing, and a loaded CI machine
        # can stall a reply past the 50 ms production default.
        made.append(RedisStorage(url, socket_timeout=2.0, connect_timeout=2.0))
        return made[-1]

    yield make
    for store in made:
        store.close_sync()


@pytest.fixture
def storage(redis_url: str, new_storage: Callable[[str], RedisStorage]) -> RedisStorage:
    return new_storage(redis_url)


def start_workers(url: str, flag: str, count: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.degradation.flag_worker", url, flag],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def test_a_change_is_seen_by_every_worker_process_within_a_second(
    storage: RedisStorage, redis_url: str
) -> None:
    flags = FeatureFlags(storage=storage)
    flags.register("recommendations", enabled=True)
    workers = start_workers(redis_url, "recommendations", 3)
    rounds: list[list[float]] = []
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        # A worker starved of CPU by a busy machine can be late once; the mechanism
        # (a version check every 0.5 s) must bring every worker within a second in one
        # of three rounds, and a broken or slower one fails all three.
        for enabled in (False, True, False):
            flags.update("recommendations", enabled=enabled)
            changed_at = time.monotonic()  # CLOCK_MONOTONIC is shared by all processes
            lags = []
            for worker in workers:
                assert worker.stdout is not None
                word, _, when = worker.stdout.readline().partition(" ")
                assert word == "seen"
                lags.append(float(when) - changed_at)
            rounds.append(lags)
            if max(lags) < 1.0:
                break
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()
    assert min(max(lags) for lags in rounds) < 1.0, rounds


def test_a_change_made_in_another_process_is_seen_here(
    storage: RedisStorage, redis_url: str, clock: ManualClock
) -> None:
    flags = FeatureFlags(storage=storage, refresh_interval=0.5, clock=clock)
    flags.register("search")
    assert flags.is_enabled("search")
    subprocess.run(
        [sys.executable, "-m", "tests.degradation.flag_worker", redis_url, "search", "--set"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert flags.is_enabled("search")  # the next check is not due yet
    clock.advance(0.5)
    assert not flags.is_enabled("search")


async def test_async_readers_see_changes_through_the_asyncio_client(
    redis_url: str, clock: ManualClock
) -> None:
    writer_store, reader_store = (
        RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0) for _ in range(2)
    )
    writer = FeatureFlags(storage=writer_store)
    reader = FeatureFlags(storage=reader_store, refresh_interval=0.5, clock=clock)
    writer.register("chat", rollout_percentage=100)
    clock.advance(1)
    assert await reader.is_enabled_async("chat")
    await writer.update_async("chat", rollout_percentage=0)
    clock.advance(1)
    assert not await reader.is_enabled_async("chat", user_id="u1")
    assert reader.get("chat") is not None
    assert reader.get("chat").rollout_percentage == 0  # type: ignore[union-attr]
    for store in (writer_store, reader_store):
        await store.aclose()


def test_registration_defaults_do_not_override_shared_state(storage: RedisStorage) -> None:
    first = FeatureFlags(storage=storage)
    first.register("search", enabled=True)
    first.disable("search")
    # A worker starting later registers the same default: the operator's "off" stays.
    second = FeatureFlags(storage=storage)
    assert second.register("search", enabled=True).enabled is False
    assert not second.is_enabled("search")


def test_a_file_seeds_an_empty_redis_and_keeps_a_copy(
    storage: RedisStorage, tmp_path: Path
) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"search": {"rollout_percentage": 40}}}))
    flags = FeatureFlags(path=path, storage=storage)
    assert flags.get("search") is not None
    other = FeatureFlags(storage=storage)  # no file: reads what the first one seeded
    assert other.get("search") == flags.get("search")
    flags.disable("search")
    assert json.loads(path.read_text())["flags"]["search"]["enabled"] is False


def test_an_outage_keeps_the_last_flags_and_recovers(
    own_redis: RedisServer, clock: ManualClock, new_storage: Callable[[str], RedisStorage]
) -> None:
    store = new_storage(own_redis.url)
    flags = FeatureFlags(storage=store, refresh_interval=0.5, clock=clock)
    flags.register("search")
    own_redis.stop()
    clock.advance(1)
    assert flags.is_enabled("search")  # served from the last snapshot, no exception
    assert flags.last_error is not None
    assert "unavailable" in flags.last_error
    with pytest.raises(StorageUnavailable):
        flags.disable("search")
    own_redis.start()  # without persistence: the server comes back empty
    clock.advance(1)
    assert flags.is_enabled("search")
    assert flags.last_error is None
    # The worker noticed Redis had lost the flags and restored its snapshot for all.
    assert FeatureFlags(storage=new_storage(own_redis.url)).is_enabled("search")


def test_start_up_with_redis_down_uses_no_flags_then_catches_up(
    own_redis: RedisServer, clock: ManualClock, new_storage: Callable[[str], RedisStorage]
) -> None:
    own_redis.stop()
    flags = FeatureFlags(storage=new_storage(own_redis.url), refresh_interval=0.5, clock=clock)
    assert not flags.is_enabled("search")
    own_redis.start()
    FeatureFlags(storage=new_storage(own_redis.url)).register("search")
    clock.advance(1)
    assert flags.is_enabled("search")


def test_a_removed_flag_disappears_from_every_worker(
    storage: RedisStorage,
    redis_url: str,
    clock: ManualClock,
    new_storage: Callable[[str], RedisStorage],
) -> None:
    writer = FeatureFlags(storage=storage)
    reader = FeatureFlags(storage=new_storage(redis_url), refresh_interval=0.5, clock=clock)
    writer.register("old_banner")
    writer.register("search")
    clock.advance(1)
    assert reader.is_enabled("old_banner")
    assert writer.remove("old_banner").name == "old_banner"
    clock.advance(1)
    assert reader.get("old_banner") is None
    assert reader.is_enabled("search")
    with pytest.raises(KeyError):
        writer.remove("old_banner")


def test_memory_storage_keeps_flags_local() -> None:
    one = FeatureFlags(storage=MemoryStorage())
    two = FeatureFlags(storage=MemoryStorage())
    one.register("x")
    assert not one.shared
    assert two.get("x") is None


@pytest.mark.cluster
def test_flags_work_on_a_redis_cluster(
    cluster_url: str, clock: ManualClock, new_storage: Callable[[str], RedisStorage]
) -> None:
    writer = FeatureFlags(storage=new_storage(cluster_url))
    reader = FeatureFlags(storage=new_storage(cluster_url), refresh_interval=0.5, clock=clock)
    writer.register("search", rollout_percentage=10)
    clock.advance(1)
    assert reader.get("search") == writer.get("search")
    writer.disable("search")
    clock.advance(1)
    assert not reader.is_enabled("search", user_id="anyone")


def test_the_operator_level_is_shared_by_every_worker(
    redis_url: str, clock: ManualClock, new_storage: Callable[[str], RedisStorage]
) -> None:
    workers = [
        DegradationManager(
            feature_flags=FeatureFlags(
                storage=new_storage(redis_url), refresh_interval=0.5, clock=clock
            ),
            clock=clock,
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.feature_flags.register("recommendations")
    events: list[LevelChange] = []
    workers[1].add_listener(events.append)
    workers[0].set_degradation_level(DegradationLevel.MAINTENANCE)
    clock.advance(0.5)
    assert workers[1].level is DegradationLevel.MAINTENANCE
    assert not workers[1].feature_flags.is_enabled("recommendations")
    assert events[0].reason == "set by an operator through another worker"
    workers[1].set_degradation_level("normal")
    clock.advance(0.5)
    assert workers[0].level is DegradationLevel.NORMAL


async def test_the_shared_level_is_read_by_the_async_evaluation(
    redis_url: str, clock: ManualClock, new_storage: Callable[[str], RedisStorage]
) -> None:
    writer = DegradationManager(feature_flags=FeatureFlags(storage=new_storage(redis_url)))
    store = RedisStorage(redis_url, socket_timeout=2.0, connect_timeout=2.0)
    reader = DegradationManager(feature_flags=FeatureFlags(storage=store), clock=clock)
    writer.set_degradation_level("critical")
    assert await reader.evaluate_async() is DegradationLevel.CRITICAL
    await store.aclose()


def test_a_level_set_while_redis_is_down_applies_locally(
    own_redis: RedisServer,
    new_storage: Callable[[str], RedisStorage],
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = DegradationManager(feature_flags=FeatureFlags(storage=new_storage(own_redis.url)))
    own_redis.stop()
    with caplog.at_level(logging.ERROR):
        manager.set_degradation_level("degraded")
    assert manager.level is DegradationLevel.DEGRADED
    assert "applies to this worker only" in caplog.text
