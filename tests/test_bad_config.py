"""Every public constructor and decorator refuses a bad value at construction (issue 12, 7 and 9).

Each row is (what is called, a bad value, the field the ConfigurationError must name,
text the message must show of the value). Every row raised something else, or nothing,
before: a TypeError or AttributeError from deep inside, or a value accepted silently
(``allow_users="alice"`` allowed users a, c, e, i, l; ``"5/0 seconds"`` meant 5 per
second; ``refresh_interval=nan`` refreshed on every read; a deadline of 0 reported every
check unhealthy; an infinite breaker duration made a Redis-backed breaker raise
OverflowError; limits Redis cannot hold failed every request instead of construction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sergas_guard.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    circuit_breaker,
    with_retry,
)
from sergas_guard.circuit_breaker.retry import RetryBudget
from sergas_guard.degradation import (
    CachedFallback,
    DegradationManager,
    FeatureFlags,
    ServiceFallback,
    StaticFallback,
    feature_flag,
    with_fallback,
)
from sergas_guard.errors import ConfigurationError
from sergas_guard.fastapi import RateLimit
from sergas_guard.health import (
    CacheHealthCheck,
    DatabaseHealthCheck,
    DiskSpaceHealthCheck,
    HealthCheckRegistry,
    HttpHealthCheck,
    ServiceHealthCheck,
    health_router,
)
from sergas_guard.ratelimit import RateLimitConfig, RateLimiter, rate_limited
from sergas_guard.ratelimit.stores.failover import FailoverStorage
from sergas_guard.storage import MemoryStorage, RedisStorage, storage_from_url
from sergas_guard.web import Rule
from sergas_guard.web.engine import RateLimitEngine

NAN = float("nan")
INF = float("inf")


def _fn() -> None:
    """A function to decorate."""


def _register(**kwargs: Any) -> Any:
    return FeatureFlags().register("h", **kwargs)


def _rollout(percentage: Any) -> Any:
    flags = FeatureFlags()
    flags.register("h")
    return flags.set_rollout_percentage("h", percentage)


def _update(**changes: Any) -> Any:
    return FeatureFlags().update("h", **changes)


def _check_all(deadline: Any) -> Any:
    registry = HealthCheckRegistry()
    registry.register(ServiceHealthCheck("ok", lambda: True))
    return asyncio.run(registry.check_all(deadline=deadline))


def _hit(key: Any) -> Any:
    return RateLimiter("5/second").hit_sync(key)


def _decorate(decorator: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return decorator(*args, **kwargs)(_fn)


Row = tuple[str, Callable[..., Any], dict[str, Any], str, str]

ROWS: list[Row] = [
    # -- rate limits: what Redis and Lua cannot hold (finding 7) ------------------------
    ("rate-years", RateLimitConfig, {"rate": "5/100000000000 years"}, "rate", "years"),
    ("rate-huge-limit", RateLimitConfig, {"rate": "99999999999999999999999/second"}, "rate",
     "99999999999999999999999"),
    ("window-1e300", RateLimitConfig, {"max_requests": 5, "window_seconds": 1e300},
     "window_seconds", "1e+300"),
    ("limit-times-window", RateLimitConfig, {"rate": "1000000/day"}, "rate", "1000000"),
    ("second-limit-of-rate", RateLimitConfig, {"rate": "10/second; 1000000/day"}, "rate",
     "1000000"),
    ("limit-above-2**52", RateLimitConfig, {"max_requests": 2**52 + 1, "window_seconds": 1e-6},
     "max_requests", str(2**52 + 1)),
    ("bucket-drains-for-ages", RateLimitConfig,
     {"rate": "1/hour", "strategy": "token_bucket", "burst": 10**6}, "burst", "10000"),
    ("sliding-log-too-long", RateLimitConfig,
     {"rate": "200000/minute", "strategy": "sliding_log"}, "rate", "200000"),
    # -- rate limits: values accepted silently or unclearly (finding 9) -----------------
    ("window-inf", RateLimitConfig, {"max_requests": 5, "window_seconds": INF},
     "window_seconds", "inf"),
    ("window-nan", RateLimitConfig, {"max_requests": 5, "window_seconds": NAN},
     "window_seconds", "nan"),
    ("zero-seconds", RateLimitConfig, {"rate": "5/0 seconds"}, "rate", "0 seconds"),
    ("max-requests-bool", RateLimitConfig, {"max_requests": True, "window_seconds": 1},
     "max_requests", "True"),
    ("burst-bool", RateLimitConfig, {"rate": "5/second", "strategy": "token_bucket",
     "burst": True}, "burst", "True"),
    ("rate-not-str", RateLimitConfig, {"rate": 5}, "rate", "5"),
    ("limiter-none", RateLimiter, {"config": None}, "config", "None"),
    ("limiter-storage", RateLimiter, {"config": "5/second", "storage": 42}, "storage", "42"),
    ("limiter-options", RateLimiter, {"config": "5/second", "cooldown_seconds": INF},
     "cooldown_seconds", "inf"),
    ("limiter-key", _hit, {"key": 5}, "key", "5"),
    ("limiter-key-none", _hit, {"key": None}, "key", "None"),
    ("limiter-key-list", _hit, {"key": ["a"]}, "key", "['a']"),
    ("decorator-max-wait", _decorate, {"decorator": rate_limited, "limit": "5/second",
     "max_wait": NAN}, "max_wait", "nan"),
    ("decorator-cost", _decorate, {"decorator": rate_limited, "limit": "5/second",
     "cost": True}, "cost", "True"),
    # -- storages -----------------------------------------------------------------------
    ("memory-max-keys-float", MemoryStorage, {"max_keys": 1.5}, "max_keys", "1.5"),
    ("memory-max-keys-bool", MemoryStorage, {"max_keys": True}, "max_keys", "True"),
    ("redis-timeout-nan", RedisStorage, {"url": "redis://h", "socket_timeout": NAN},
     "socket_timeout", "nan"),
    ("redis-connect-timeout-str", RedisStorage, {"url": "redis://h", "connect_timeout": "1"},
     "connect_timeout", "'1'"),
    ("redis-retries-bool", RedisStorage, {"url": "redis://h", "retries": True}, "retries",
     "True"),
    ("redis-connections", RedisStorage, {"url": "redis://h", "max_connections": 0},
     "max_connections", "0"),
    ("redis-prefix", RedisStorage, {"url": "redis://h", "key_prefix": ""}, "key_prefix", "''"),
    ("url-not-str", storage_from_url, {"url": 5}, "storage", "int"),
    ("url-max-keys", storage_from_url, {"url": "memory://?max_keys=1.5"}, "max_keys", "1.5"),
    ("failover-cooldown", FailoverStorage, {"storage": MemoryStorage(),
     "cooldown_seconds": INF}, "cooldown_seconds", "inf"),
    ("failover-policy", FailoverStorage, {"storage": MemoryStorage(), "policy": "open"},
     "policy", "'open'"),
    ("failover-storage", FailoverStorage, {"storage": "redis://h"}, "storage", "redis://h"),
    # -- web rules and middleware options -----------------------------------------------
    ("rule-methods-int", Rule, {"path": "/x", "methods": 5}, "methods", "5"),
    ("rule-methods-item", Rule, {"path": "/x", "methods": ["GET", None]}, "methods", "None"),
    ("rule-methods-empty", Rule, {"path": "/x", "methods": []}, "methods", "None matches"),
    ("rule-methods-space", Rule, {"path": "/x", "methods": "PO ST"}, "methods", "'PO ST'"),
    ("rule-path", Rule, {"path": 5}, "path", "5"),
    ("rule-cost-bool", Rule, {"path": "/x", "cost": True}, "cost", "True"),
    ("rule-cost-float", Rule, {"path": "/x", "cost": 1.5}, "cost", "1.5"),
    ("rule-limits", Rule, {"path": "/x", "limits": 5}, "limits", "5"),
    ("rule-shadow", Rule, {"path": "/x", "shadow": "yes"}, "shadow", "'yes'"),
    ("rule-cost-above-capacity", RateLimitEngine,
     {"rules": [Rule("/x", "5/minute", cost=6)]}, "cost", "6"),
    ("engine-unknown-option", RateLimitEngine, {"trusted_proxy": ["10.0.0.0/8"]},
     "trusted_proxy", "trusted_proxy"),
    ("engine-shadow", RateLimitEngine, {"shadow": 1}, "shadow", "1"),
    ("engine-ipv6-prefix", RateLimitEngine, {"ipv6_prefix": True}, "ipv6_prefix", "True"),
    ("engine-proxies", RateLimitEngine, {"trusted_proxies": 5}, "trusted_proxies", "int"),
    ("engine-key-func", RateLimitEngine, {"key_func": "ip"}, "key_func", "'ip'"),
    ("fastapi-methods", RateLimit, {"limits": "5/second", "cost": -1}, "cost", "-1"),
    ("fastapi-limits", RateLimit, {"limits": "5/0 seconds"}, "rate", "0 seconds"),
    # -- circuit breakers ---------------------------------------------------------------
    ("breaker-inf", CircuitBreakerConfig, {"wait_duration_in_open": INF},
     "wait_duration_in_open", "inf"),
    ("breaker-nan", CircuitBreakerConfig, {"slow_call_duration": NAN}, "slow_call_duration",
     "nan"),
    ("breaker-huge", CircuitBreakerConfig, {"probe_timeout": 1e300}, "probe_timeout", "1e+300"),
    ("breaker-bool", CircuitBreakerConfig, {"window_size": True}, "window_size", "True"),
    ("breaker-name", CircuitBreaker, {"name": None}, "name", "None"),
    ("breaker-config", CircuitBreaker, {"name": "b", "config": {"window_size": 5}}, "config",
     "window_size"),
    ("manager-configs", CircuitBreakerManager, {"configs": {"b": 5}}, "configs['b']", "5"),
    ("decorator-breaker", circuit_breaker, {"name": ""}, "name", "''"),
    ("retry-attempts-bool", with_retry, {"attempts": True}, "attempts", "True"),
    ("retry-attempts-float", with_retry, {"attempts": 2.5}, "attempts", "2.5"),
    ("retry-on", with_retry, {"retry_on": "OSError"}, "retry_on", "'OSError'"),
    ("retry-option", with_retry, {"stop_after": 3}, "tenacity_options", "stop_after"),
    ("retry-budget", RetryBudget, {"ratio": NAN}, "ratio", "nan"),
    # -- degradation --------------------------------------------------------------------
    ("allow-users-str", _register, {"allow_users": "alice"}, "allow_users", "'alice'"),
    ("deny-users-str", _register, {"deny_users": "bob"}, "deny_users", "'bob'"),
    ("description-5mb", _register, {"description": "x" * 5_000_000}, "description",
     "at most 4096"),
    ("rollout-nan", _rollout, {"percentage": NAN}, "rollout_percentage", "nan"),
    ("rollout-bool", _rollout, {"percentage": True}, "rollout_percentage", "True"),
    ("update-rollout", _update, {"rollout_percentage": 101}, "rollout_percentage", "101"),
    ("refresh-nan", FeatureFlags, {"refresh_interval": NAN}, "refresh_interval", "nan"),
    ("refresh-inf", FeatureFlags, {"refresh_interval": INF}, "refresh_interval", "inf"),
    ("flags-namespace", FeatureFlags, {"namespace": ""}, "namespace", "''"),
    ("manager-hold", DegradationManager, {"hold_seconds": INF}, "hold_seconds", "inf"),
    ("manager-flags", DegradationManager, {"feature_flags": {}}, "feature_flags", "{}"),
    ("cached-ttl", CachedFallback, {"name": "c", "cache_ttl": NAN}, "cache_ttl", "nan"),
    ("cached-entries", CachedFallback, {"name": "c", "max_entries": 2.5}, "max_entries", "2.5"),
    ("cached-name", CachedFallback, {"name": 5}, "name", "5"),
    ("static-factory", StaticFallback, {"name": "s", "factory": 5}, "factory", "5"),
    ("service-func", ServiceFallback, {"name": "s", "func": 5}, "func", "callable"),
    ("with-fallback-name", with_fallback, {"fallback": lambda: 1, "name": ""}, "name", "''"),
    ("feature-flag-flags", feature_flag, {"name": "f", "flags": "flags.json"}, "flags",
     "flags.json"),
    ("feature-flag-name", feature_flag, {"name": None}, "name", "None"),
    # -- health -------------------------------------------------------------------------
    ("registry-timeout-str", HealthCheckRegistry, {"timeout": "5"}, "timeout", "'5'"),
    ("registry-timeout-inf", HealthCheckRegistry, {"timeout": INF}, "timeout", "inf"),
    ("registry-cache-ttl", HealthCheckRegistry, {"cache_ttl": NAN}, "cache_ttl", "nan"),
    ("deadline-zero", _check_all, {"deadline": 0}, "deadline", "0"),
    ("deadline-negative", _check_all, {"deadline": -1}, "deadline", "-1"),
    ("deadline-nan", _check_all, {"deadline": NAN}, "deadline", "nan"),
    ("service-timeout-bool", ServiceHealthCheck, {"name": "s", "check_func": _fn,
     "timeout": True}, "timeout", "True"),
    ("service-critical", ServiceHealthCheck, {"name": "s", "check_func": _fn,
     "critical": "no"}, "critical", "'no'"),
    ("service-tags", ServiceHealthCheck, {"name": "s", "check_func": _fn, "tags": "ready"},
     "tags", "'ready'"),
    ("database-url", DatabaseHealthCheck, {"name": "d", "connection_string": None},
     "connection_string", "None"),
    ("database-max-connections", DatabaseHealthCheck, {"name": "d",
     "connection_string": "sqlite:///x.db", "max_connections": 1.5}, "max_connections", "1.5"),
    ("cache-url", CacheHealthCheck, {"name": "c", "redis_url": 6379}, "redis_url", "6379"),
    ("cache-latency", CacheHealthCheck, {"name": "c", "redis_url": "redis://h",
     "degraded_latency": NAN}, "degraded_latency", "nan"),
    ("cache-memory-bool", CacheHealthCheck, {"name": "c", "redis_url": "redis://h",
     "memory_threshold": True}, "memory_threshold", "(0, 1]"),
    ("http-method", HttpHealthCheck, {"name": "h", "url": "http://h/", "method": None},
     "method", "None"),
    ("disk-bytes", DiskSpaceHealthCheck, {"min_free_bytes": 1.5}, "min_free_bytes", "1.5"),
    ("router-details", health_router, {"registry": HealthCheckRegistry(), "details": "some"},
     "details", "never"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "kwargs", "field", "shows"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_bad_value_is_a_configuration_error_naming_the_field(
    call: Callable[..., Any], kwargs: dict[str, Any], field: str, shows: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        call(**kwargs)
    assert caught.value.field == field, str(caught.value)
    assert shows in str(caught.value)
    assert len(str(caught.value)) < 1000  # a 5 MB value is not copied into the message


def test_every_row_is_named_once() -> None:
    names = [row[0] for row in ROWS]
    assert len(names) == len(set(names))
