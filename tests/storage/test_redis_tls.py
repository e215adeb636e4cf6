"""Decisions over TLS (``rediss://``) against a real redis-server with a TLS port.

Async decision connections let redis-py connect and shake hands, then read replies with
a protocol of our own put on the transport: over TLS that transport is asyncio's SSL
layer, which must hand the decrypted replies to our protocol and close cleanly.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sergas_guard.ratelimit.result import LimitSpec, RateLimitStrategy
from sergas_guard.ratelimit.stores.base import LimitCheck
from sergas_guard.ratelimit.stores.redis import RedisStorage
from tests.servers import free_port, redis_server, wait_for_port

pytestmark = pytest.mark.redis

SPEC = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1000, 60_000_000, 1000)
CHECKS = [LimitCheck("sg:tls:{client}", SPEC)]


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``rediss://`` URL of a private redis-server with a self-signed certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    with redis_server(
        "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ):  # fmt: skip
        wait_for_port(port)
        yield f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"


async def test_concurrent_decisions_over_tls_count_exactly(tls_url: str) -> None:
    storage = RedisStorage(tls_url, connect_timeout=2.0, socket_timeout=2.0)
    results = await asyncio.gather(*(storage.decide(CHECKS, 1) for _ in range(40)))
    assert sorted(r[0].remaining for r in results) == list(range(960, 1000))
    # The sync face agrees with what the async one counted.
    assert storage.decide_sync(CHECKS, 0)[0].remaining == 960
    await storage.aclose()  # closes through the SSL layer: no hang, no unclosed socket


async def test_a_flushed_script_cache_over_tls_is_reloaded(tls_url: str) -> None:
    storage = RedisStorage(tls_url, connect_timeout=2.0, socket_timeout=2.0)
    before = (await storage.decide(CHECKS, 1))[0].remaining
    admin = redis.Redis.from_url(tls_url)
    admin.script_flush()
    admin.close()
    assert (await storage.decide(CHECKS, 1))[0].remaining == before - 1
    await storage.aclose()
