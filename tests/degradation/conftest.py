"""Fixtures of the degradation tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import pytest

from sergas_guard.clock import ManualClock
from sergas_guard.degradation import set_default_flags
from tests import servers
from tests.servers import free_port as servers_free_port


def _cluster_port() -> int:
    # A cluster node also listens on its port + 10000, so it must be at most 55535;
    # tests.servers.free_port may return more (see the report to the lead).
    for _ in range(1000):
        port = servers_free_port()
        if port <= 55535:
            return port
    raise RuntimeError("no free port at or below 55535")


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """URL of a real 3-master Redis Cluster whose ports leave room for the cluster bus."""
    with contextlib.ExitStack() as stack:
        # Patched only while the nodes start, not for the rest of the session.
        with mock.patch.object(servers, "free_port", _cluster_port):
            cluster = stack.enter_context(servers.redis_cluster())
        yield cluster.url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(autouse=True)
def _fresh_default_flags() -> Iterator[None]:
    """Each test starts with an empty process-wide FeatureFlags."""
    set_default_flags(None)
    yield
    set_default_flags(None)
