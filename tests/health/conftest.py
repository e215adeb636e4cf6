"""Fixtures of the health tests: a running PostgreSQL, a real uvicorn, a counting check."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from sergas_guard.health import DatabaseHealthCheck
from sergas_guard.health.result import Observation
from tests import servers
from tests.servers import PostgresServer, RedisCluster, free_port


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@pytest.fixture
def postgres(postgres_session: PostgresServer) -> Iterator[PostgresServer]:
    """The session's PostgreSQL, running (restarted if a test stopped it)."""
    if not _listening(postgres_session.port):
        postgres_session.start()
    yield postgres_session
    if not _listening(postgres_session.port):
        postgres_session.start()


class CountingDatabaseCheck(DatabaseHealthCheck):
    """The real PostgreSQL check, counting how often it reaches the database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probes = 0

    async def probe(self) -> Observation:
        self.probes += 1
        return await super().probe()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def uvicorn_app() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with uvicorn_app(app) as base_url:`` — a real HTTP server for the block."""
    return serve


def _cluster_safe_port() -> int:
    # A cluster node also listens on port + 10000 (its bus), so ports above 55535 fail
    # `redis-cli --cluster create`; tests/servers.py does not avoid them yet.
    for _ in range(1000):
        port = free_port()
        if port <= 55535:
            return port
    raise RuntimeError("no free port below 55536")


@pytest.fixture(scope="module")
def redis_cluster_health() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster whose nodes' bus ports are valid."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(servers, "free_port", _cluster_safe_port)
            cluster = stack.enter_context(servers.redis_cluster())
        yield cluster
