"""Storage fixtures: one suite, every backend (memory and a real redis-server)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from sergas_guard.ratelimit.stores.failover import FailoverStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests import servers
from tests.servers import RedisCluster, RedisServer

# Redis keys expire by the server's wall clock at `now + horizon`; tests that pass an
# explicit `now` start a day ahead of it so no key expires under them.
DAY_US = 86_400 * 1_000_000


# Generous timeouts for tests that are not about failure: two busy cores can stall a
# reply past the production default of 50 ms.
def patient(url: str) -> RedisStorage:
    return RedisStorage(url, connect_timeout=2.0, socket_timeout=2.0)


@pytest.fixture
def t0() -> int:
    """A start time (µs) for tests that drive the clock themselves."""
    return time.time_ns() // 1000 + DAY_US


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    # Redis behind the failover wrapper: fail_closed, so any failure would surface.
    pytest.param("failover", id="failover-redis", marks=pytest.mark.redis),
]

AnyStorage = MemoryStorage | RedisStorage | FailoverStorage


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_storage(
    backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[], AnyStorage]]:
    """Build storages of the parametrised backend; all of one test share its state."""
    made: list[AnyStorage] = []
    memory = MemoryStorage()
    url = ""
    if backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster_session")
        _flush_cluster(cluster)
        url = cluster.url
    elif backend != "memory":
        url = request.getfixturevalue("redis_url")

    def make() -> AnyStorage:
        if backend == "memory":
            return memory
        storage: AnyStorage = patient(url)
        if backend == "failover":
            storage = FailoverStorage(storage, "fail_closed")
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.close_sync()


def _flush_cluster(cluster: RedisCluster) -> None:
    import redis

    for host, port in cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        node.flushall()
        node.close()


@pytest.fixture
async def storage(make_storage: Callable[[], AnyStorage]) -> AsyncIterator[AnyStorage]:
    made = make_storage()
    yield made
    await made.aclose()


@pytest.fixture
def redis_storage(redis_url: str) -> Iterator[RedisStorage]:
    storage = patient(redis_url)
    yield storage
    storage.close_sync()


@pytest.fixture(scope="module")
def module_redis(redis_session: RedisServer) -> Iterator[RedisStorage]:
    """One storage for a module's hypothesis tests (function fixtures would reset per example)."""
    if redis_session.process is None or redis_session.process.poll() is not None:
        redis_session.start()
    storage = patient(redis_session.url)
    storage.sync_client.flushall()
    yield storage
    storage.close_sync()


_free_port = servers.free_port


def _cluster_safe_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    while True:
        port = _free_port()
        if port + 10000 <= 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", port + 10000)) != 0:
                    return port


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisCluster]:
    """The shared cluster fixture, with node ports whose bus port (port + 10000) exists.

    Workaround: tests/servers.py may pick a port above 55535, whose cluster bus port
    does not exist, and the node then never starts.
    """
    original = servers.free_port
    servers.free_port = _cluster_safe_port
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(servers.redis_cluster())
        finally:
            servers.free_port = original
        _wait_cluster_agrees(cluster)
        yield cluster


def _wait_cluster_agrees(cluster: RedisCluster, within: float = 30.0) -> None:
    """Wait until every node is ok and sees the same slot map.

    Right after ``--cluster create`` only the first node is known to be ok; the others
    may still answer CLUSTERDOWN or MOVED for a moment, which clients then see as errors.
    """
    import redis

    deadline = time.monotonic() + within
    nodes = [redis.Redis(host=h, port=p) for h, p in cluster.startup_nodes]
    try:
        while time.monotonic() < deadline:
            states = [n.cluster("INFO") for n in nodes]
            maps = [sorted(map(repr, n.cluster("SLOTS"))) for n in nodes]
            if all(s["cluster_state"] == "ok" for s in states) and all(m == maps[0] for m in maps):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster's nodes did not agree on the slot map")
    finally:
        for node in nodes:
            node.close()
