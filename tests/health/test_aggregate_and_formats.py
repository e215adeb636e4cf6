"""The pure core: aggregation invariants, the summary, the wire formats, the cache rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.errors import HealthCheckError
from sergas_guard.health import CheckResult, HealthCheckRegistry, HealthStatus
from sergas_guard.health.aggregate import effective_status, overall_status, summarize
from sergas_guard.health.disk import judge_disk
from sergas_guard.health.formats import choose_format, health_json, plain_json, text_view
from sergas_guard.health.result_cache import CachePolicy

SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.UNHEALTHY: 2,
    HealthStatus.UNKNOWN: 2,
}

results_strategy = st.lists(
    st.builds(
        CheckResult,
        name=st.text("abcdef", min_size=1, max_size=4),
        status=st.sampled_from(list(HealthStatus)),
        critical=st.booleans(),
    ),
    max_size=8,
)


@given(results_strategy)
def test_overall_is_the_worst_effective_status(results: list[CheckResult]) -> None:
    status = overall_status(results)
    critical_failure = any(
        r.critical and r.status in (HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN) for r in results
    )
    assert (status is HealthStatus.UNHEALTHY) == critical_failure
    if all(r.status is HealthStatus.HEALTHY for r in results):
        assert status is HealthStatus.HEALTHY
    for result in results:
        assert SEVERITY[effective_status(result)] <= SEVERITY[status]


@given(results_strategy, results_strategy)
def test_more_results_never_improve_the_status(a: list[CheckResult], b: list[CheckResult]) -> None:
    assert SEVERITY[overall_status(a + b)] >= SEVERITY[overall_status(a)]


@given(results_strategy)
def test_summary_counts_add_up(results: list[CheckResult]) -> None:
    summary = summarize(results)
    assert summary["total_checks"] == len(results)
    total = summary["healthy"] + summary["degraded"] + summary["unhealthy"] + summary["unknown"]
    assert total == len(results)
    assert summary["status"] == overall_status(results)


def test_non_critical_failure_only_degrades() -> None:
    results = [
        CheckResult("db", HealthStatus.HEALTHY),
        CheckResult("search", HealthStatus.UNHEALTHY, critical=False),
    ]
    assert overall_status(results) is HealthStatus.DEGRADED
    results.append(CheckResult("cache", HealthStatus.UNHEALTHY))
    assert overall_status(results) is HealthStatus.UNHEALTHY


def test_nothing_checked_is_healthy_and_summary_has_the_documented_keys() -> None:
    summary = HealthCheckRegistry.get_summary({})
    assert summary["status"] == "healthy"
    assert {"status", "total_checks", "healthy", "degraded", "unhealthy"} <= summary.keys()
    assert f"{summary['status']}" == "healthy"  # prints as in the original documentation


def _sample() -> list[CheckResult]:
    return [
        CheckResult(
            "db",
            HealthStatus.HEALTHY,
            observed_value=3.5,
            observed_unit="ms",
            time=1_700_000_000.25,
            component_type="datastore",
            measurement="responseTime",
        ),
        CheckResult("queue", HealthStatus.DEGRADED, message="backlog 900", critical=False),
    ]


def test_health_json_follows_the_draft() -> None:
    document = health_json(_sample(), details=True, service={"serviceId": "api"})
    assert document["status"] == "warn"
    assert document["serviceId"] == "api"
    assert document["output"] == "queue: backlog 900"
    db = document["checks"]["db:responseTime"][0]
    assert db == {
        "componentId": "db",
        "componentType": "datastore",
        "status": "pass",
        "time": "2023-11-14T22:13:20.250Z",
        "observedValue": 3.5,
        "observedUnit": "ms",
    }
    assert document["checks"]["queue:status"][0]["output"] == "backlog 900"
    assert health_json(_sample(), details=False) == {"status": "warn"}


def test_plain_json_and_text_views() -> None:
    full = plain_json(_sample(), details=True)
    assert full["status"] == "degraded"
    assert full["checks"]["db"]["observed_value"] == 3.5
    json.dumps(full)  # serialisable as it is
    assert plain_json(_sample(), details=False) == {"status": "degraded"}
    text = text_view(_sample(), details=True)
    assert text.splitlines()[0] == "status: degraded"
    assert "queue (non-critical): degraded" in text
    assert "backlog 900" in text
    assert text_view(_sample(), details=False) == "status: degraded\n"


@pytest.mark.parametrize(
    ("accept", "verbose", "expected"),
    [
        (None, False, "health+json"),
        ("*/*", False, "health+json"),
        ("application/json", False, "json"),
        ("application/json;q=0.5, application/health+json", False, "health+json"),
        ("application/health+json;q=0.1, application/json;q=0.9", False, "json"),
        ("text/plain", False, "text"),
        ("image/png", False, "health+json"),
        ("application/json", True, "text"),
    ],
)
def test_content_negotiation(accept: str | None, verbose: bool, expected: str) -> None:
    assert choose_format(accept, verbose=verbose) == expected


@given(
    total=st.integers(1, 10**12),
    free_share=st.floats(0, 1),
    degraded=st.floats(0.01, 1),
    minimum=st.floats(0.001, 1),
)
def test_disk_verdict_is_monotonic_in_free_space(
    total: int, free_share: float, degraded: float, minimum: float
) -> None:
    minimum = min(minimum, degraded)
    free = int(total * free_share)
    verdict = judge_disk(
        free, total, degraded_free_ratio=degraded, min_free_ratio=minimum, min_free_bytes=0
    )
    more = judge_disk(
        min(total, free * 2 + 1),
        total,
        degraded_free_ratio=degraded,
        min_free_ratio=minimum,
        min_free_bytes=0,
    )
    assert SEVERITY[more.status] <= SEVERITY[verdict.status]
    if free / total >= degraded:
        assert verdict.status is HealthStatus.HEALTHY


@given(age=st.floats(0, 100), ttl=st.floats(0, 50), failure_ttl=st.floats(0, 50))
def test_cache_policy_uses_the_ttl_of_the_result(
    age: float, ttl: float, failure_ttl: float
) -> None:
    policy = CachePolicy(ttl, failure_ttl)
    healthy = CheckResult("a", HealthStatus.HEALTHY)
    failing = CheckResult("a", HealthStatus.UNHEALTHY)
    assert policy.is_fresh(healthy, age, 1.0) == (age < ttl)
    assert policy.is_fresh(failing, age, 1.0) == (age < failure_ttl)


def test_cache_policy_rejects_negative_ttls() -> None:
    with pytest.raises(HealthCheckError, match="cache_ttl"):
        CachePolicy(-1, 0)
