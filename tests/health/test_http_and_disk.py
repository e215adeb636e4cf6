"""HttpHealthCheck against a real uvicorn server; DiskSpaceHealthCheck on a real filesystem."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from sergas_guard.errors import HealthCheckError
from sergas_guard.health import DiskSpaceHealthCheck, HealthStatus, HttpHealthCheck
from tests.servers import free_port

Serve = Callable[[Any], contextlib.AbstractContextManager[str]]


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _broken(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=500)


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.3)
    return PlainTextResponse("late")


async def _private(request: Request) -> PlainTextResponse:
    allowed = request.headers.get("authorization") == "Bearer tok-123456"
    return PlainTextResponse("ok" if allowed else "no", status_code=200 if allowed else 401)


async def _moved(request: Request) -> RedirectResponse:
    return RedirectResponse("/ok")


@pytest.fixture
def dependency(uvicorn_app: Serve) -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/ok", _ok),
            Route("/broken", _broken),
            Route("/slow", _slow),
            Route("/private", _private),
            Route("/moved", _moved),
        ]
    )
    with uvicorn_app(app) as base:
        yield base


async def test_expected_status_is_healthy(dependency: str) -> None:
    result = await HttpHealthCheck("api", f"{dependency}/ok").check()
    assert result.status is HealthStatus.HEALTHY, result.message
    assert result.details == {"status_code": 200}
    assert result.observed_unit == "ms"


async def test_unexpected_status_or_redirect_is_unhealthy(dependency: str) -> None:
    broken = await HttpHealthCheck("api", f"{dependency}/broken").check()
    assert broken.status is HealthStatus.UNHEALTHY
    assert broken.message == "unexpected HTTP status 500 (expected 200)"
    moved = await HttpHealthCheck("api", f"{dependency}/moved").check()
    assert moved.status is HealthStatus.UNHEALTHY
    followed = await HttpHealthCheck("api", f"{dependency}/moved", follow_redirects=True).check()
    assert followed.is_healthy
    accepted = await HttpHealthCheck(
        "api", f"{dependency}/broken", expected_status=range(200, 600)
    ).check()
    assert accepted.is_healthy


async def test_slow_dependency_degrades_and_timeout_bounds_it(dependency: str) -> None:
    slow = await HttpHealthCheck("api", f"{dependency}/slow", degraded_latency=0.1).check()
    assert slow.status is HealthStatus.DEGRADED
    assert slow.message.startswith("slow reply")
    late = await HttpHealthCheck("api", f"{dependency}/slow", timeout=0.1).check()
    assert late.status is HealthStatus.UNHEALTHY
    assert "timed out" in late.message.lower()


async def test_credentials_pass_but_never_show(dependency: str) -> None:
    good = HttpHealthCheck(
        "api", f"{dependency}/private", headers={"Authorization": "Bearer tok-123456"}
    )
    assert (await good.check()).is_healthy
    base = dependency.replace("http://", "http://user:url-pw-999@")
    bad = HttpHealthCheck("api", f"{base}/private", headers={"Authorization": "Bearer tok-999999"})
    result = await bad.check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "url-pw-999" not in bad.url
    assert "tok-999999" not in repr(result)


async def test_nothing_listening_is_unhealthy() -> None:
    result = await HttpHealthCheck("api", f"http://127.0.0.1:{free_port()}/").check()
    assert result.status is HealthStatus.UNHEALTHY
    assert "ConnectError" in result.message


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("ftp://x", {}, "not an http"),
        ("http://x", {"expected_status": 99}, "expected_status"),
        ("http://x", {"expected_status": []}, "expected_status"),
    ],
)
def test_bad_http_options_are_refused(url: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(HealthCheckError, match=message):
        HttpHealthCheck("api", url, **kwargs)


async def test_disk_space_on_a_real_filesystem(tmp_path: Path) -> None:
    fine = await DiskSpaceHealthCheck("disk", tmp_path, min_free_bytes=1).check()
    assert fine.status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
    assert fine.observed_unit == "percent"
    assert 0 <= fine.details["free_bytes"] <= fine.details["total_bytes"]
    impossible = await DiskSpaceHealthCheck("disk", tmp_path, min_free_bytes=2**62).check()
    assert impossible.status is HealthStatus.UNHEALTHY
    assert "bytes" in impossible.message
    missing = await DiskSpaceHealthCheck("disk", tmp_path / "absent").check()
    assert missing.status is HealthStatus.UNHEALTHY
    assert "FileNotFoundError" in missing.message


def test_bad_disk_thresholds_are_refused() -> None:
    with pytest.raises(HealthCheckError, match="must not exceed"):
        DiskSpaceHealthCheck("disk", ".", degraded_free_ratio=0.05, min_free_ratio=0.2)
