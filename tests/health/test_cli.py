"""``sergas-guard health``: CliRunner and a real subprocess, against real servers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from sergas_guard.cli import cli
from sergas_guard.cli.health import command
from sergas_guard.health import HealthStatus, health_router
from sergas_guard.health.config import load_health_config
from tests.servers import PostgresServer, free_port


def always_degraded() -> HealthStatus:
    """Referenced by a config file as ``tests.health.test_cli:always_degraded``."""
    return HealthStatus.DEGRADED


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "health.toml"
    path.write_text(text)
    return path


def _sqlite(tmp_path: Path) -> str:
    connection = sqlite3.connect(tmp_path / "app.db")
    with connection:
        connection.execute("CREATE TABLE t (x int)")
    connection.close()
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.mark.redis
def test_healthy_config_in_the_original_shape_exits_0(tmp_path: Path, redis_url: str) -> None:
    config = _write(
        tmp_path,
        f"""
interval_seconds = 60
timeout_seconds = 10

[checks.database]
enabled = true
connection_string = "{_sqlite(tmp_path)}"

[checks.cache]
enabled = true
redis_url = "{redis_url}"

[checks.external_apis]
enabled = false
""",
    )
    result = CliRunner().invoke(cli, ["health", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "database" in result.stdout
    assert "cache" in result.stdout
    assert "external_apis" not in result.stdout
    assert "healthy" in result.stdout


def test_degraded_exits_1_and_json_is_the_summary(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        f"""
[checks.disk]
path = "{tmp_path}"
min_free_bytes = 1
degraded_free_ratio = 1.0

[checks.queue]
type = "service"
callable = "tests.health.test_cli:always_degraded"

[checks.external_apis]
critical = false
urls = ["http://127.0.0.1:{free_port()}/health"]
""",
    )
    result = CliRunner().invoke(command, ["--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "degraded"
    assert summary["total_checks"] == 3
    assert summary["checks"]["queue"]["status"] == "degraded"
    assert summary["checks"]["external_apis"]["status"] == "unhealthy"
    assert summary["checks"]["external_apis"]["critical"] is False


@pytest.mark.postgres
def test_unhealthy_exits_2_without_showing_the_password(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TEST_DSN", postgres.dsn(password="Wr0ng-cli-pw"))
    config = _write(
        tmp_path,
        """
[checks.database]
connection_string = "${SG_TEST_DSN}"
max_connections = 20
""",
    )
    wide = {"COLUMNS": "250"}  # one table row per line, for the assertions below
    result = CliRunner().invoke(command, ["--config", str(config), "--verbose"], env=wide)
    assert result.exit_code == 2, result.output
    row = next(line for line in result.stdout.splitlines() if "database" in line)
    assert "password authentication failed" in row
    assert "max_connections" not in row  # the connection never opened: no usage details
    assert "Wr0ng-cli-pw" not in result.output
    assert "unhealthy" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[checks.database\n", "not valid TOML"),
        ("[checks.mystery]\nurl = 'x'\n", "checks.mystery"),
        ("[checks.cache]\nredis_url = 5\n", "redis_url"),
        ("[checks.database]\nconnection_string = 'mysql://u:pw1@h/db'\n", "unsupported"),
        ("[checks.database]\nconnection_string = '${SG_SURELY_UNSET}'\n", "SG_SURELY_UNSET"),
        ("[checks.queue]\ntype = 'service'\ncallable = 'no.such.module:f'\n", "cannot import"),
        ("timeout_seconds = -1\n", "timeout_seconds"),
        ("[checks.external_apis]\nenabled = false\n", "no health checks"),
    ],
)
def test_configuration_errors_exit_3(tmp_path: Path, text: str, expected: str) -> None:
    result = CliRunner().invoke(command, ["--config", str(_write(tmp_path, text))])
    assert result.exit_code == 3, result.output
    assert "configuration error" in result.stderr
    assert expected in result.stderr.replace("\n", "")
    assert "pw1" not in result.stderr


def test_environment_overrides_top_level_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path, "[checks.disk]\npath = '.'\n")
    monkeypatch.setenv("SERGAS_GUARD_HEALTH__TIMEOUT_SECONDS", "-5")
    result = CliRunner().invoke(command, ["--config", str(config)])
    assert result.exit_code == 3
    assert "timeout_seconds" in result.stderr
    monkeypatch.setenv("SERGAS_GUARD_HEALTH__TIMEOUT_SECONDS", "2.5")
    assert load_health_config(config).build_checks()[0].timeout == 2.5


def test_missing_config_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SERGAS_GUARD_HEALTH_CONFIG", raising=False)
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 3
    assert "--config" in result.stderr
    assert CliRunner().invoke(command, ["--config", "absent.toml"]).exit_code == 3


def test_config_from_the_environment_and_a_health_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path, f"[health.checks.db]\nconnection_string = '{_sqlite(tmp_path)}'\n")
    monkeypatch.setenv("SERGAS_GUARD_HEALTH_CONFIG", str(config))
    result = CliRunner().invoke(command, ["--json", "--tag", "ready"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checks"]["db"]["component_type"] == "datastore"
    unknown_tag = CliRunner().invoke(command, ["--tag", "nothing-has-it"])
    assert unknown_tag.exit_code == 3
    assert "nothing-has-it" in unknown_tag.stderr


@pytest.mark.redis
def test_real_subprocess(tmp_path: Path, redis_url: str) -> None:
    config = _write(
        tmp_path,
        f"""
[checks.cache]
redis_url = "{redis_url}"

[checks.db]
connection_string = "sqlite:///{tmp_path / "missing.db"}"
""",
    )
    script = Path(sys.executable).with_name("sergas-guard")
    runner = [str(script)] if script.exists() else [sys.executable, "-m", "sergas_guard"]
    done = subprocess.run(
        [*runner, "health", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    summary = json.loads(done.stdout)
    assert summary["checks"]["cache"]["status"] == "healthy"
    assert summary["checks"]["db"]["status"] == "unhealthy"


PROBES: list[int] = []


def counted_probe() -> bool:
    """Referenced by the lifespan test's config; counts its calls."""
    PROBES.append(1)
    return True


async def test_a_config_driven_registry_refreshes_in_an_app_lifespan(tmp_path: Path) -> None:
    config = load_health_config(
        _write(
            tmp_path,
            "interval_seconds = 3600\ncache_ttl_seconds = 0\nfailure_cache_ttl_seconds = 0\n"
            "[checks.probe]\ntype = 'service'\ncallable = 'tests.health.test_cli:counted_probe'\n",
        )
    )
    registry = config.build_registry()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with registry.running(config.interval_seconds):
            yield

    app = Starlette(lifespan=lifespan)
    app.routes.extend(health_router(registry).routes)
    PROBES.clear()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        answers = [(await client.get("/health")).status_code for _ in range(20)]
    assert answers == [200] * 20
    assert len(PROBES) == 1  # the runner's first refresh; requests read its result
