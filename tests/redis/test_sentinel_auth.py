"""SentinelResolver with password-protected Sentinels (requirepass) and data nodes.

A master and one Sentinel are enough here (ready at once); failover is covered by
test_sentinel.py. The passwords never appear in an error or a repr.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sergas_guard.errors import StorageUnavailable
from sergas_guard.redis.address import TcpAddress
from sergas_guard.redis.sentinel import SentinelResolver
from sergas_guard.secrets import secrets_of
from tests.servers import RedisSentinel, redis_sentinel

pytestmark = pytest.mark.redis

SENTINEL_PASSWORD = "Sentinel-Pw-7c1e"
MASTER_PASSWORD = "Master-Pw-93ab"
WRONG_PASSWORD = "Wrong-Pw-5d20"


@pytest.fixture(scope="module")
def guarded() -> Iterator[RedisSentinel]:
    with redis_sentinel(
        replicas=0, sentinels=1, password=SENTINEL_PASSWORD, master_password=MASTER_PASSWORD
    ) as started:
        yield started


def resolver_for(topology: RedisSentinel, **credentials: str) -> SentinelResolver:
    return SentinelResolver(
        [TcpAddress("127.0.0.1", port) for port in topology.sentinel_ports],
        topology.service,
        connect_timeout=2.0,
        **credentials,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("username", [None, "default"])
async def test_resolves_with_the_passwords(guarded: RedisSentinel, username: str | None) -> None:
    names = {"username": username, "master_username": username} if username else {}
    resolver = resolver_for(
        guarded, password=SENTINEL_PASSWORD, master_password=MASTER_PASSWORD, **names
    )
    master = TcpAddress("127.0.0.1", guarded.master.port)
    assert await resolver.resolve() == master
    resolver.invalidate(master)
    assert resolver.resolve_sync() == master
    assert set(secrets_of(resolver)) == {SENTINEL_PASSWORD, MASTER_PASSWORD}
    assert SENTINEL_PASSWORD not in repr(resolver)
    assert MASTER_PASSWORD not in repr(resolver)


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({}, r"wants credentials we were not given \(NOAUTH.*\): set its password"),
        ({"password": WRONG_PASSWORD}, r"refused our credentials \(WRONGPASS"),
        ({"password": SENTINEL_PASSWORD}, r"wants credentials .*: set the master's password"),
        (
            {"password": SENTINEL_PASSWORD, "master_password": WRONG_PASSWORD},
            r"refused our credentials \(WRONGPASS",
        ),
    ],
    ids=["no-password", "wrong-sentinel-password", "no-master-password", "wrong-master"],
)
async def test_refused_credentials_are_named_without_the_passwords(
    guarded: RedisSentinel, credentials: dict[str, str], expected: str
) -> None:
    resolver = resolver_for(guarded, **credentials)
    with pytest.raises(StorageUnavailable, match=expected) as from_async:
        await resolver.resolve()
    with pytest.raises(StorageUnavailable, match=expected) as from_sync:
        resolver.resolve_sync()
    for caught in (from_async, from_sync):
        shown = str(caught.value) + repr(caught.value) + repr(resolver)
        for password in (SENTINEL_PASSWORD, MASTER_PASSWORD, WRONG_PASSWORD):
            assert password not in shown
