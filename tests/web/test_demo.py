"""The demo service: in process for behaviour, and `sergas-guard demo` as a real process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from sergas_guard.cli import cli
from sergas_guard.demo_app import create_app
from sergas_guard.storage import RedisStorage
from tests.servers import free_port, wait_for_port
from tests.web.conftest import asgi_client


async def test_home_explains_itself_and_a_few_dozen_requests_show_a_429() -> None:
    app = create_app()
    async with asgi_client(app) as client:
        statuses = []
        first = await client.get("/")
        for _ in range(30):
            statuses.append((await client.get("/")).status_code)
    assert first.status_code == 200
    explained = first.json()
    assert {route["path"] for route in explained["routes"]} >= {"/", "/reports"}
    assert "curl" in explained["try"]
    assert first.headers["ratelimit-policy"] == '"home";q=10;w=60'
    assert 429 in statuses
    assert statuses.index(429) == 9  # exactly 10 admitted in all


async def test_dependency_shadow_health_and_stats_routes() -> None:
    app = create_app()
    async with asgi_client(app) as client:
        searches = [(await client.get("/search", params={"q": "x"})).status_code for _ in range(6)]
        reports = [await client.get("/reports") for _ in range(5)]
        health = [(await client.get(path)).status_code for path in ("/livez", "/readyz") * 60]
        stats = (await client.get("/stats")).json()
        items = await client.get("/items/3")
    assert searches == [200] * 5 + [429]
    assert {r.status_code for r in reports} == {200}
    assert reports[-1].headers["ratelimit"].startswith('"reports";r=0;')
    assert set(health) == {200}
    assert stats["rate_limits"]["shadow_rejected"] == 2
    assert items.json() == {"id": 3, "name": "item 3"}
    assert items.headers["ratelimit-policy"] == '"items";q=20;w=60'


async def test_breaker_opens_after_failures_and_answers_503() -> None:
    app = create_app()
    async with asgi_client(app) as client:
        failures = [(await client.get("/upstream?fail=true")).json() for _ in range(3)]
        refused = await client.get("/upstream")
        ready = await client.get("/health")
    assert failures[-1]["breaker"] == "open"
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert ready.status_code == 200  # the upstream is not critical: degraded, still serving
    assert ready.json()["status"] == "warn"  # health+json for degraded


@pytest.mark.redis
async def test_demo_on_redis(redis_url: str) -> None:
    storage = RedisStorage(redis_url, socket_timeout=5.0, connect_timeout=5.0)
    app = create_app(storage)
    async with asgi_client(app) as client:
        statuses = [(await client.get("/")).status_code for _ in range(12)]
    await app.aclose()
    assert statuses == [200] * 10 + [429] * 2


def test_cli_help_and_bad_storage() -> None:
    runner = CliRunner()
    assert "--storage" in runner.invoke(cli, ["demo", "--help"]).output
    bad = runner.invoke(cli, ["demo", "--storage", "ftp://nowhere"])
    assert bad.exit_code == 2
    assert "unknown storage URL" in bad.output


@pytest.fixture
def demo_process() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sergas_guard", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_sergas_guard_demo_serves_on_loopback(
    demo_process: tuple[str, subprocess.Popen[str]],
) -> None:
    base, process = demo_process
    with httpx.Client(base_url=base) as client:
        statuses = [client.get("/").status_code for _ in range(12)]
    process.terminate()
    output, _ = process.communicate(timeout=10)
    assert statuses == [200] * 10 + [429] * 2
    assert "/items/{item_id}" in output
    assert f"curl -s -o /dev/null -w '%{{http_code}} ' {base}/" in output
