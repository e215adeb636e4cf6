"""No secret of a check's URL or headers leaves through a result, a report, a log or the CLI.

Every check fails for real: Redis, PostgreSQL and HTTP URLs point at a closed port on
127.0.0.1, so the drivers' own errors (connection refused, or a refusal of the URL at
construction) are what gets scrubbed. ``sergas-guard health`` runs each configuration
through click's runner, exit 2 (unhealthy) or 3 (configuration error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck as Health
from hypothesis import assume, example, given, settings
from starlette.applications import Starlette

from sergas_guard.cli.health import command
from sergas_guard.errors import GuardError, HealthCheckError
from sergas_guard.health import (
    CacheHealthCheck,
    DatabaseHealthCheck,
    HealthCheck,
    HealthCheckRegistry,
    HttpHealthCheck,
    ServiceHealthCheck,
)
from sergas_guard.health.config import HealthConfig
from sergas_guard.health.formats import health_json, plain_json, text_view
from tests.secret_leaks import (
    Form,
    blur_digits,
    header_values,
    leaks,
    libpq_quoted,
    percent_encoded,
    query,
    secrets,
    stand_in,
)
from tests.servers import free_port

CLOSED = free_port()
CLOSED_TOO = free_port()
HTTP_URL = f"http://127.0.0.1:{CLOSED}/health"


@dataclass(frozen=True)
class Case:
    """A check built from a secret written in ``form``, and its TOML for the CLI."""

    kind: str
    form: Form
    header: str | None = None  # the secret goes in this header, not in the URL

    def build(self, secret: str) -> HealthCheck:
        text = self.form.fill(secret)
        if self.kind == "cache":
            return CacheHealthCheck("cache", text, timeout=2.0)
        if self.kind == "database":
            return DatabaseHealthCheck("database", text, timeout=2.0)
        if self.header:
            return HttpHealthCheck("http", HTTP_URL, headers={self.header: text}, timeout=2.0)
        return HttpHealthCheck("http", text, timeout=2.0)

    def toml(self) -> str:
        if self.kind == "cache":
            return '[checks.cache]\nredis_url = "${SG_TEST_SECRET}"\n'
        if self.kind == "database":
            return '[checks.database]\nconnection_string = "${SG_TEST_SECRET}"\n'
        if self.header:
            return (
                f'[checks.http]\nurl = "{HTTP_URL}"\n'
                f'headers = {{ "{self.header}" = "${{SG_TEST_SECRET}}" }}\n'
            )
        return '[checks.http]\nurl = "${SG_TEST_SECRET}"\n'

    def __str__(self) -> str:
        return f"{self.kind}:{self.header or ''}:{self.form}"


CASES = [
    Case("cache", Form(f"redis://app:{{}}@127.0.0.1:{CLOSED}/0")),
    Case("cache", Form(f"redis://:{{}}@127.0.0.1:{CLOSED}/0", percent_encoded)),
    Case("cache", query(f"redis://127.0.0.1:{CLOSED}/0?password={{}}")),
    Case("cache", Form(f"redis+cluster://app:{{}}@127.0.0.1:{CLOSED},127.0.0.1:{CLOSED_TOO}")),
    Case(
        "cache",
        Form(f"redis+sentinel://app:{{}}@127.0.0.1:{CLOSED},127.0.0.1:{CLOSED_TOO}/mymaster"),
    ),
    Case("cache", query(f"redis+sentinel://127.0.0.1:{CLOSED}/mymaster?sentinel_password={{}}")),
    Case("cache", Form("mysql://app:{}@db.internal/app")),  # unsupported
    Case("database", Form(f"postgresql://app:{{}}@127.0.0.1:{CLOSED}/app")),
    Case("database", Form(f"postgresql://app:{{}}@127.0.0.1:{CLOSED}/app", percent_encoded)),
    Case("database", Form(f"postgres://app:{{}}@127.0.0.1:{CLOSED},127.0.0.1:{CLOSED_TOO}/app")),
    Case(
        "database",
        query(f"postgresql://app@127.0.0.1:{CLOSED}/app?sslpassword={{}}&sslmode=disable"),
    ),
    Case("database", Form(f"host=127.0.0.1 port={CLOSED} password={{}} dbname=app", libpq_quoted)),
    Case("http", Form(f"http://app:{{}}@127.0.0.1:{CLOSED}/health")),
    Case("http", query(f"http://127.0.0.1:{CLOSED}/health?token={{}}")),
    Case("http", Form("Bearer {}"), header="Authorization"),
    Case("http", Form("{}"), header="X-Api-Key"),
]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="sergas_guard"):
        yield caplog


def _reports(build: Callable[[], HealthCheck]) -> list[str]:
    """What the library says about a check: errors, repr, results in every format."""
    try:
        check = build()
    except GuardError as exc:
        return [str(exc), repr(exc)]
    said = [repr(check), str(check)]
    said += [str(getattr(check, name, "")) for name in ("redis_url", "connection_string", "url")]
    registry = HealthCheckRegistry()
    registry.register(check)
    results = asyncio.run(registry.check_all())
    said += [repr(result) for result in results.values()]
    said += [
        json.dumps(plain_json(results, details=True)),
        json.dumps(health_json(results, details=True)),
        text_view(results, details=True),
    ]
    return said


def _cli(case: Case, secret: str) -> list[str]:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "health.toml"
        config.write_text(case.toml())
        env = {"SG_TEST_SECRET": case.form.fill(secret), "COLUMNS": "400"}
        said = []
        for extra in ([], ["--json"], ["--verbose"]):
            result = CliRunner().invoke(command, ["--config", str(config), *extra], env=env)
            assert result.exit_code in (2, 3), (result.output, result.exception)
            said += [result.output]
    return said


def _log_lines(logs: pytest.LogCaptureFixture) -> list[str]:
    lines = [logs.text, *(record.getMessage() for record in logs.records)]
    logs.clear()
    return lines


def _everything(case: Case, secret: str, logs: pytest.LogCaptureFixture) -> list[str]:
    return _reports(lambda: case.build(secret)) + _cli(case, secret) + _log_lines(logs)


def _assert_nothing_leaks(case: Case, secret: str, logs: pytest.LogCaptureFixture) -> None:
    shape = stand_in(secret)
    assume(shape != secret and case.form.fits(secret))
    logs.clear()
    known = _everything(case, shape, logs)
    # Outputs hold times and durations, which change between runs: compared blurred.
    blurred = blur_digits(secret)
    assume(len(blurred) >= 4 and not any(blurred in blur_digits(text) for text in known))
    said = _everything(case, secret, logs)
    assert leaks(secret, said, known, blur_digits) == []


PROPERTY = settings(
    max_examples=8, deadline=None, suppress_health_check=[Health.function_scoped_fixture]
)


@pytest.mark.parametrize("case", [c for c in CASES if not c.header], ids=str)
@PROPERTY
@given(secret=secrets)
@example(secret="Pg@TopSecret")  # issue 12: shown as app:***@TopSecret@h by the CLI
@example(secret="a b&c")
def test_no_secret_of_a_check_url_leaves(
    case: Case, secret: str, logs: pytest.LogCaptureFixture
) -> None:
    _assert_nothing_leaks(case, secret, logs)


@pytest.mark.parametrize("case", [c for c in CASES if c.header], ids=str)
@PROPERTY
@given(secret=header_values)
@example(secret=" Top Secret ")
def test_no_secret_of_a_check_header_leaves(
    case: Case, secret: str, logs: pytest.LogCaptureFixture
) -> None:
    _assert_nothing_leaks(case, secret, logs)


def test_the_connection_string_hides_secret_parameters() -> None:
    check = DatabaseHealthCheck(
        "db", "postgresql://app:pw@db/app?sslpassword=Top Secret:1&sslmode=require"
    )
    assert check.connection_string == (
        "postgresql://app:***@db/app?sslpassword=***&sslmode=require"
    )


@pytest.mark.parametrize(
    ("build", "hidden"),
    [
        (lambda: CacheHealthCheck("c", "redis://app:abcd/efgh@127.0.0.1:6379/0"), "abcd"),
        (lambda: DatabaseHealthCheck("d", "postgresql://app:abcd@efgh@db/app"), "abcd"),
        (lambda: DatabaseHealthCheck("d", "postgresql://app@db/app?sslpassword=abcd&efgh"), "efgh"),
        (lambda: HttpHealthCheck("h", "http://app:abcd/efgh@127.0.0.1/health"), "abcd"),
    ],
)
def test_a_url_a_driver_would_misread_is_refused_at_construction(
    build: Callable[[], HealthCheck], hidden: str
) -> None:
    with pytest.raises(GuardError) as info:
        build()
    assert hidden not in str(info.value)
    assert "percent-encode" in str(info.value)


def test_the_documented_authoriser_compares_in_constant_time(
    uvicorn_app: Callable[[Any], contextlib.AbstractContextManager[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "health.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.DOTALL)
    assert not any("==" in block and "Bearer" in block for block in blocks)
    (block,) = (block for block in blocks if "compare_digest" in block)
    monkeypatch.setenv("OPS_TOKEN", "s3cr3t-ops-token")
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    namespace["registry"].register(ServiceHealthCheck("api", lambda: True))
    app = Starlette()
    app.mount("/ops", namespace["router"])
    with uvicorn_app(app) as base_url:
        for header, sees_details in [
            ("Bearer s3cr3t-ops-token", True),
            ("Bearer s3cr3t-ops-tokeN", False),
            ("Bearer s3cr3t-ops-token-and-more", False),
            ("", False),
        ]:
            answer = httpx.get(f"{base_url}/ops/health", headers={"authorization": header})
            assert answer.status_code == 200
            assert ("checks" in answer.json()) is sees_details, header


def test_the_configuration_shows_its_urls_and_headers_scrubbed() -> None:
    config = HealthConfig.validate_mapping(
        {
            "checks": {
                "database": {"connection_string": "postgresql://app:Pg@Top Secret@db/app"},
                "http": {
                    "url": "https://api.example/health?token=tok-1234",
                    "headers": {"Authorization": "Bearer tok-5678", "Accept": "text/plain"},
                },
            }
        }
    )
    for text in (repr(config), str(config), repr(config.checks["http"])):
        for secret in ("Top Secret", "tok-1234", "tok-5678"):
            assert secret not in text
    assert "postgresql://app:***@db/app" in repr(config)
    assert "'Accept': 'text/plain'" in repr(config)


def test_an_http_url_httpx_misreads_is_refused_without_the_password() -> None:
    # A raw '/' in the password ends the authority for httpx, whose error then quotes the
    # password's head as an invalid "port" (found by the property above).
    with pytest.raises(HealthCheckError) as caught:
        HttpHealthCheck("http", "http://app:0,0A/@127.0.0.1:48717/health")
    assert "0,0A" not in str(caught.value)
    assert caught.value.field == "url"
