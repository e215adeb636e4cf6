"""Rules (patterns, methods, groups, namespaces) and header formatting, without a server."""

from __future__ import annotations

import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.clock import ManualClock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, RateLimitStrategy
from sergas_guard.ratelimit.limiter import RateLimitDecision
from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, most_restrictive
from sergas_guard.ratelimit.stores.redis import RedisStorage
from sergas_guard.storage import MemoryStorage
from sergas_guard.web import ProblemText, Rule
from sergas_guard.web.engine import ADMITTED, SHADOW_REJECTED, EngineStats
from sergas_guard.web.headers import HeaderMode, PolicySet, RecordedDecision, rate_limit_headers
from sergas_guard.web.keys import client_ip
from sergas_guard.web.rejection import Rejection
from sergas_guard.web.rules import RuleSet, compile_path


def ruleset(rules: list[Rule], default: str | None = "5/minute") -> RuleSet:
    return RuleSet(
        rules,
        default,
        storage=MemoryStorage(),
        key=client_ip,
        strategy=None,
        shadow=False,
        on_storage_error=None,
        clock=None,
    )


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("/items/{id}", ["/items/1", "/items/abc"], ["/items", "/items/", "/items/1/x"]),
        # Werkzeug's int takes any Unicode digit; Starlette's `$` a final newline.
        ("/items/{id:int}", ["/items/42", "/items/١٢", "/items/42\n"], ["/items/x", "/items/4\r"]),
        # Starlette runs /files/{p:path} for /files/ (an empty rest).
        ("/files/{p:path}", ["/files/a", "/files/a/b/c", "/files/", "/files/a\n"], ["/files"]),
        ("/api/*", ["/api", "/api/", "/api/v1/x", "/api/a\nb", "/api\n"], ["/apix", "/ap"]),
        ("/exact", ["/exact", "/exact\n"], ["/exact/", "/exactly", "/exact\n\n", "/exact\r"]),
        ("/a.b/{x}", ["/a.b/1", "/a.b/1\n"], ["/aXb/1"]),
    ],
)
def test_path_patterns(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    matches = compile_path(pattern)
    assert all(matches(path) for path in matching)
    assert not any(matches(path) for path in not_matching)


@pytest.mark.parametrize("pattern", ["items", "/x/{id:float}"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(ConfigurationError):
        compile_path(pattern)


def test_first_matching_rule_wins_and_methods_filter() -> None:
    rules = ruleset(
        [
            Rule("/items/{id}", "1/minute", methods=["POST"]),
            Rule("/items/*", "2/minute"),
            Rule("/health", exempt=True),
        ]
    )
    assert rules.match("POST", "/items/1").name == "POST /items/{id}"
    assert rules.match("GET", "/items/1").name == "/items/*"
    assert rules.match("GET", "/other").name == "default"
    assert rules.match("GET", "/health").limiter is None


def test_get_rules_cover_head() -> None:
    rules = ruleset([Rule("/x", "1/minute", methods="GET")])
    assert rules.match("HEAD", "/x").name == "GET /x"
    assert rules.match("POST", "/x").name == "default"


async def test_routes_never_share_a_budget_unless_grouped() -> None:
    rules = ruleset(
        [
            Rule("/a", "1/minute"),
            Rule("/b", "1/minute"),
            Rule("/c", "1/minute", group="cd"),
            Rule("/d", group="cd"),
        ]
    )
    a, b, c, d = (rules.match("GET", path) for path in ("/a", "/b", "/c", "/d"))
    assert a.limiter is not None
    assert b.limiter is not None
    assert (await a.limiter.decide("ip:1")).allowed
    assert (await b.limiter.decide("ip:1")).allowed  # same limits, other route: own budget
    group_limiter = c.limiter
    assert group_limiter is not None
    assert d.limiter is group_limiter
    assert (await group_limiter.decide("ip:1")).allowed
    assert not (await group_limiter.decide("ip:1")).allowed  # the group's one unit is spent
    keys = {check.key for plan in (a, b, c) if plan.limiter for check in plan.limiter.checks("k")}
    assert len(keys) == 3
    assert not any("{a}" in key or "{/" in key for key in keys)  # braces only around the id


def test_group_with_conflicting_limits_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ruleset([Rule("/a", "1/minute", group="g"), Rule("/b", "2/minute", group="g")])
    assert raised.value.field == "group"


def test_rule_without_limits_and_no_default_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        ruleset([Rule("/a")], default=None)
    assert ruleset([], default=None).match("GET", "/a").limiter is None


@pytest.mark.parametrize(
    "bad",
    [
        {"cost": -1},
        {"cost": True},
        {"cost": "2"},
        {"key": "ip"},
        {"exempt": "yes"},
        {"path": "nope"},
    ],
)
def test_bad_rules(bad: dict[str, object]) -> None:
    options: dict[str, object] = {"path": "/x", "limits": "1/second", **bad}
    with pytest.raises(ConfigurationError):
        Rule(**options)  # type: ignore[arg-type]


def test_limits_as_config_or_limiter() -> None:
    shared = RateLimiter("3/second", name="shared")
    config = RateLimitConfig(max_requests=7, window_seconds=10, strategy="token_bucket")
    rules = ruleset([Rule("/shared", shared), Rule("/config", config)])
    assert rules.match("GET", "/shared").limiter is shared
    config_limiter = rules.match("GET", "/config").limiter
    assert config_limiter is not None
    assert config_limiter.name == "web:rule:/config"
    assert config_limiter.specs[0].strategy is RateLimitStrategy.TOKEN_BUCKET


# -- headers ---------------------------------------------------------------------------

SF_ITEM = re.compile(r'^"[^"\\]*"(;[a-z]+=[0-9]+)+$')


def recorded(results: list[RateLimitResult], windows: list[int], scope: str) -> RecordedDecision:
    specs = tuple(
        LimitSpec(RateLimitStrategy.FIXED_WINDOW, r.limit, w * 1_000_000, r.limit)
        for r, w in zip(results, windows, strict=True)
    )
    decision = RateLimitDecision("k", specs, tuple(results), most_restrictive(results))
    return RecordedDecision(PolicySet.build(scope, specs), decision)


def test_ietf_headers_list_every_policy_and_the_most_restrictive_state() -> None:
    entry = recorded(
        [RateLimitResult(True, 10, 9, 0.0, 0.5), RateLimitResult(True, 100, 2, 0.0, 30.2)],
        [1, 60],
        "api",
    )
    headers = dict(rate_limit_headers([entry], HeaderMode.IETF, ManualClock()))
    assert headers[b"ratelimit-policy"] == b'"api-1s";q=10;w=1, "api-60s";q=100;w=60'
    assert headers[b"ratelimit"] == b'"api-60s";r=2;t=31'
    for item in headers[b"ratelimit-policy"].decode().split(", "):
        assert SF_ITEM.match(item)


def test_rejected_state_uses_retry_after_rounded_up_and_legacy_uses_epoch() -> None:
    entry = recorded([RateLimitResult(False, 5, 0, 2.1, 9.0)], [60], "default")
    clock = ManualClock(1000.2)
    both = dict(rate_limit_headers([entry], HeaderMode.BOTH, clock))
    assert both[b"ratelimit"] == b'"default";r=0;t=3'
    assert both[b"x-ratelimit-limit"] == b"5"
    assert both[b"x-ratelimit-remaining"] == b"0"
    assert both[b"x-ratelimit-reset"] == b"1004"
    legacy = dict(rate_limit_headers([entry], HeaderMode.LEGACY, clock))
    assert b"ratelimit" not in legacy
    assert b"x-ratelimit-limit" in legacy
    assert rate_limit_headers([entry], HeaderMode.NONE, clock) == []


def test_several_decisions_merge_policies_and_pick_the_governing_one() -> None:
    outer = recorded([RateLimitResult(True, 100, 50, 0.0, 10.0)], [60], "default")
    inner = recorded([RateLimitResult(True, 5, 1, 0.0, 10.0)], [60], "dependency")
    headers = dict(rate_limit_headers([outer, inner], HeaderMode.IETF, ManualClock()))
    assert headers[b"ratelimit-policy"] == b'"default";q=100;w=60, "dependency";q=5;w=60'
    assert headers[b"ratelimit"] == b'"dependency";r=1;t=10'


@given(st.text(max_size=30))
def test_policy_names_are_always_valid_structured_strings(name: str) -> None:
    spec = LimitSpec(RateLimitStrategy.FIXED_WINDOW, 1, 1_000_000, 1)
    (quoted,) = PolicySet.build(name, [spec]).quoted
    assert re.fullmatch(r'"(?:[ !#-\[\]-~]|\\"|\\\\)*"', quoted)


def test_problem_text_template_is_checked() -> None:
    assert "3" in ProblemText(detail="wait {retry_after}s").render(3, ["a"], "x")
    with pytest.raises(ConfigurationError):
        ProblemText(detail="wait {seconds}")


def test_only_plans_counting_in_process_memory_decide_inline(redis_url: str) -> None:
    # An inline plan is decided on the limiter's sync face inside the event loop: only
    # safe when the storage does no I/O.
    memory = ruleset([Rule("/x", "1/second")])
    assert memory.default.inline
    assert memory.match("GET", "/x").inline
    remote = RuleSet(
        [Rule("/x", "1/second"), Rule("/free", exempt=True)],
        "5/minute",
        storage=RedisStorage(redis_url),
        key=client_ip,
        strategy=None,
        shadow=False,
        on_storage_error="fallback",
        clock=None,
    )
    assert not remote.default.inline
    assert not remote.match("GET", "/x").inline
    assert not remote.match("GET", "/free").inline


@given(
    remaining=st.integers(0, 10**9),
    wait=st.floats(0, 10**6, allow_nan=False),
    allowed=st.booleans(),
    policies=st.integers(1, 3),
)
def test_single_decision_headers_match_the_general_form(
    remaining: int, wait: float, allowed: bool, policies: int
) -> None:
    # IETF headers of one decision take a shortcut; BOTH goes the general way and must
    # carry the very same two IETF headers.
    results = [
        RateLimitResult(allowed or n > 0, 10**9, remaining, 0.0 if allowed else wait, wait)
        for n in range(policies)
    ]
    entry = recorded(results, [n + 1 for n in range(policies)], "p")
    fast = rate_limit_headers([entry], HeaderMode.IETF, ManualClock())
    general = rate_limit_headers([entry], HeaderMode.BOTH, ManualClock())
    assert fast == general[:2]
    assert dict(fast)[b"ratelimit"].endswith(b";t=%d" % math.ceil(wait))


def test_counts_of_finished_threads_are_kept_but_their_lists_are_folded() -> None:
    # A server starting a thread per request must not grow the registry without end.
    stats = EngineStats()
    for _ in range(200):
        thread = threading.Thread(target=stats.add, args=(ADMITTED,))
        thread.start()
        thread.join()
    assert stats.totals()["admitted"] == 200
    assert stats.threads_tracked() <= 65


def test_engine_counters_add_up_across_threads() -> None:
    stats = EngineStats()

    def count(_: int) -> None:
        for _ in range(500):
            stats.add(ADMITTED)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(count, range(16)))
    stats.add(SHADOW_REJECTED, "login")
    assert stats.totals()["admitted"] == 16 * 500
    assert stats.threads_tracked() <= 9
    assert stats.totals()["shadow_rejected"] == 1
    assert stats.shadow_by_policy == {"login": 1}


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (429, "429 Too Many Requests"),
        (503, "503 Service Unavailable"),
        (404, "404 Not Found"),  # a hidden feature (sergas_guard.degradation.http)
        (599, "599 Error"),  # outside the registry: still a valid status line
    ],
)
def test_rejection_status_lines_carry_the_standard_phrase(status: int, line: str) -> None:
    assert Rejection(status, [], b"").status_line == line
