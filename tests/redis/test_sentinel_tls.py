"""SentinelResolver over TLS (``rediss+sentinel://``): Sentinels and master on TLS only."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from sergas_guard.errors import StorageUnavailable
from sergas_guard.redis.address import TcpAddress
from sergas_guard.redis.sentinel import SentinelResolver
from tests.servers import RedisSentinel, redis_sentinel

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def secure() -> Iterator[RedisSentinel]:
    with redis_sentinel(replicas=0, sentinels=1, tls=True) as started:
        yield started


def resolver_for(topology: RedisSentinel, context: ssl.SSLContext | None) -> SentinelResolver:
    return SentinelResolver(
        [TcpAddress("127.0.0.1", port) for port in topology.sentinel_ports],
        topology.service,
        connect_timeout=2.0,
        ssl=context,
    )


async def test_resolves_over_verified_tls(secure: RedisSentinel) -> None:
    assert secure.tls is not None
    context = ssl.create_default_context(cafile=str(secure.tls.cert))  # checks the host too
    resolver = resolver_for(secure, context)
    master = TcpAddress("127.0.0.1", secure.master.port)
    assert await resolver.resolve() == master
    resolver.invalidate(master)
    assert resolver.resolve_sync() == master


async def test_an_untrusted_certificate_is_named(secure: RedisSentinel) -> None:
    resolver = resolver_for(secure, ssl.create_default_context())  # the system CAs only
    with pytest.raises(StorageUnavailable, match="SSLCertVerificationError"):
        await resolver.resolve()
    with pytest.raises(StorageUnavailable, match="SSLCertVerificationError"):
        resolver.resolve_sync()


async def test_plain_text_to_a_tls_sentinel_fails_cleanly(secure: RedisSentinel) -> None:
    resolver = resolver_for(secure, None)
    with pytest.raises(StorageUnavailable, match=r"could not be reached \(ConnectionResetError"):
        await resolver.resolve()
    with pytest.raises(StorageUnavailable, match=r"could not be reached \(ConnectionResetError"):
        resolver.resolve_sync()
