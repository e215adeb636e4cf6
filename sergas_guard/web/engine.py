"""The decision engine both middlewares drive: rules, identities, shadow mode, outages.

The ASGI and WSGI middlewares only translate their protocol; everything they decide is
decided here, once. :meth:`RateLimitEngine.decide` (async) and
:meth:`RateLimitEngine.decide_sync` differ only in the storage call.

Two kinds of failure are kept apart by construction. The application's callbacks
(key, cost, exempt) run before the storage is asked, wrapped by
:class:`~sergas_guard.web.guarded.CallbackGuard` so that they always give a usable
identity, cost and answer (a bug in one is logged once and counted in
``callback_errors``); only the storage call itself is inside the ``try`` whose
failures take the ``on_storage_error`` policy.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypedDict, Unpack

from sergas_guard import validation
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.limiter import RateLimitDecision, StorageErrorPolicy
from sergas_guard.ratelimit.result import RateLimitStrategy
from sergas_guard.ratelimit.stores.base import RateLimitStorage
from sergas_guard.ratelimit.stores.failover import StorageFailClosed, UncheckedResult
from sergas_guard.secrets import scrub, secrets_of
from sergas_guard.web.context import RequestContext, new_recorded
from sergas_guard.web.guarded import CallbackGuard
from sergas_guard.web.headers import HeaderMode, header_mode
from sergas_guard.web.identity import ClientAddressResolver, ProxyHeader
from sergas_guard.web.keys import client_ip
from sergas_guard.web.rejection import (
    ProblemText,
    Rejection,
    rejection_for,
    too_costly_rejection,
)
from sergas_guard.web.request import RequestInfo
from sergas_guard.web.rules import Limits, Plan, RuleLike, RuleSet, resolve_storage

__all__ = ["Action", "EngineOptions", "EngineStats", "RateLimitEngine"]

logger = logging.getLogger("sergas_guard.web")

_POLICIES = ("fail_open", "fail_closed", "fallback")


class Action(enum.Enum):
    """What the edge does with a request after the engine decided."""

    PASS = "pass"  # let it through (headers, if any decision was taken)
    REJECT = "reject"  # answer 429
    UNAVAILABLE = "unavailable"  # storage down under fail_closed: answer 503
    TOO_COSTLY = "too_costly"  # costs more than the limit can ever admit: answer 413


class EngineOptions(TypedDict, total=False):
    """The options both middlewares take (see :class:`sergas_guard.asgi.RateLimitMiddleware`).

    ``name`` names the default limits' policy in headers and their storage namespace.
    """

    storage: RateLimitStorage | str | None
    trusted_proxies: Collection[str]
    proxy_header: ProxyHeader
    ipv6_prefix: int
    shadow: bool
    headers: HeaderMode | str
    key_func: Callable[[RequestInfo], str] | None
    on_storage_error: StorageErrorPolicy
    strategy: RateLimitStrategy | str | None
    problem: ProblemText | None
    clock: Clock | None
    name: str


# Enum members looked up on their class cost a Python-level attribute lookup each
# time; the request path returns these.
_PASS = Action.PASS
_REJECT = Action.REJECT
_UNAVAILABLE = Action.UNAVAILABLE
_TOO_COSTLY = Action.TOO_COSTLY

_COUNTERS = (
    "admitted",
    "rejected",
    "shadow_rejected",
    "exempt",
    "storage_errors",
    "unchecked",
    "too_costly",
    "callback_errors",
)
(
    ADMITTED,
    REJECTED,
    SHADOW_REJECTED,
    EXEMPT,
    STORAGE_ERRORS,
    UNCHECKED,
    TOO_COSTLY,
    CALLBACK_ERRORS,
) = range(len(_COUNTERS))


#: Past this many registered threads, the counts of finished ones are folded together.
_FOLD_AFTER = 64


class _ThreadCounts(threading.local):
    """One thread's counters: a thread only ever adds to its own list, so no lock."""

    def __init__(self, stats: EngineStats) -> None:
        self.values = [0] * len(_COUNTERS)
        stats._register(threading.current_thread(), self.values)


class EngineStats:
    """Counters of one middleware's decisions (this process only).

    WSGI servers decide in several threads at once. A lock per request would cost
    more than the rest of the bookkeeping, so each thread counts in a list of its own
    (``stats.local.values[ADMITTED] += 1``) and readers add the lists up. Servers that
    start a thread per request would grow that registry without end, so the lists of
    finished threads are folded into one when it gets long.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_thread: list[tuple[threading.Thread, list[int]]] = []
        self._finished = [0] * len(_COUNTERS)
        self.local = _ThreadCounts(self)
        self.shadow_by_policy: dict[str, int] = {}

    def _register(self, thread: threading.Thread, values: list[int]) -> None:
        with self._lock:
            if len(self._per_thread) >= _FOLD_AFTER:
                alive = []
                for entry in self._per_thread:
                    if entry[0].is_alive():
                        alive.append(entry)
                    else:  # a finished thread never counts again: safe to fold
                        self._finished = [
                            a + b for a, b in zip(self._finished, entry[1], strict=True)
                        ]
                self._per_thread = alive
            self._per_thread.append((thread, values))

    def add(self, counter: int, policy: str | None = None) -> None:
        """Count one event; a shadow rejection also counts under its ``policy``."""
        self.local.values[counter] += 1
        if policy is not None:
            with self._lock:
                self.shadow_by_policy[policy] = self.shadow_by_policy.get(policy, 0) + 1

    def totals(self) -> dict[str, int]:
        """Every counter summed over the threads."""
        with self._lock:
            lists = [self._finished, *(values for _, values in self._per_thread)]
        return {name: sum(values[i] for values in lists) for i, name in enumerate(_COUNTERS)}

    def threads_tracked(self) -> int:
        """How many threads' lists are kept apart (the rest are folded)."""
        return len(self._per_thread)


def _check_options(options: EngineOptions) -> None:
    """Raise ConfigurationError naming the first option that is unknown or of a wrong type.

    The options arrive as ``**kwargs``, so a misspelt one would otherwise be ignored.
    The others (storage, headers, proxies, limits, ...) are checked where they are used.
    """
    unknown = sorted(options.keys() - EngineOptions.__optional_keys__)
    if unknown:
        raise ConfigurationError(
            f"unknown option {unknown[0]!r}; the options are "
            + ", ".join(sorted(EngineOptions.__optional_keys__)),
            field=unknown[0],
        )
    if "shadow" in options:
        validation.flag(options["shadow"], "shadow")
    if "key_func" in options:
        validation.callable_or_none(options["key_func"], "key_func")
    if "name" in options:
        validation.name(options["name"], "name")
    if options.get("problem") is not None and not isinstance(options["problem"], ProblemText):
        raise ConfigurationError(
            f"problem must be a ProblemText, not {options['problem']!r:.80}", field="problem"
        )


class RateLimitEngine:
    """Rules, limiters and identity resolution of one middleware. See the middlewares.

    Raises ConfigurationError naming the option for an unknown or invalid option.
    """

    def __init__(
        self,
        default_limits: Limits | None = "100/minute",
        rules: Iterable[RuleLike] = (),
        **options: Unpack[EngineOptions],
    ) -> None:
        _check_options(options)
        on_storage_error = options.get("on_storage_error", "fallback")
        if on_storage_error not in _POLICIES:
            raise ConfigurationError(
                f"on_storage_error must be one of {', '.join(_POLICIES)}, not {on_storage_error!r}",
                field="on_storage_error",
            )
        clock = options.get("clock")
        self.mode = header_mode(options.get("headers", HeaderMode.IETF))
        self.clock = clock or SYSTEM_CLOCK
        self.problem = options.get("problem") or ProblemText()
        self.on_storage_error: StorageErrorPolicy = on_storage_error
        self.resolver = ClientAddressResolver(
            options.get("trusted_proxies", ()),
            proxy_header=options.get("proxy_header", "x-forwarded-for"),
            ipv6_prefix=options.get("ipv6_prefix", 64),
        )
        self.stats = EngineStats()
        self.rules = RuleSet(
            list(rules),
            default_limits,
            storage=resolve_storage(options.get("storage"), clock),
            key=options.get("key_func") or client_ip,
            strategy=options.get("strategy"),
            shadow=options.get("shadow", False),
            on_storage_error=on_storage_error,
            clock=clock,
            default_name=options.get("name", "default"),
            client_key=self.resolver.client_key,
            guard=CallbackGuard(self.resolver.client_key, self.count_callback_error),
        )

    def count_callback_error(self) -> None:
        """Count one fault of an application callback (logged once per kind elsewhere)."""
        self.stats.local.values[CALLBACK_ERRORS] += 1

    def plan(self, method: str, path: str) -> Plan:
        """The plan of the first rule matching the request (or the default plan)."""
        return self.rules.match(method, path)

    async def decide(self, plan: Plan, context: RequestContext) -> Action:
        """Decide the request in ``context`` under ``plan``, recording the decision on it."""
        limiter = plan.limiter
        info = context.info
        if limiter is None or (plan.exempt is not None and plan.exempt(info)):
            self.stats.local.values[EXEMPT] += 1
            return _PASS
        # The callbacks are guarded (see CallbackGuard): an int >= 0, a bounded str.
        cost = plan.cost
        if not isinstance(cost, int):
            cost = cost(info)
            if cost > limiter.capacity:
                return self._too_costly(plan, context)
        key = plan.key(info)
        try:
            decision = await limiter.decide(key, cost)
        except ConfigurationError:
            raise
        except Exception as exc:  # a store outage must never become a 500
            return self._storage_failed(plan, exc)
        return self._settle(plan, key, decision, context)

    def decide_sync(self, plan: Plan, context: RequestContext) -> Action:
        """Sync face of :meth:`decide` (WSGI): the storage's sync client, no event loop.

        The ASGI middleware uses it too for ``plan.inline`` plans, whose storage is this
        process's memory: nothing to wait for, so no coroutine to pay for.
        """
        limiter = plan.limiter
        info = context.info
        if limiter is None or (plan.exempt is not None and plan.exempt(info)):
            self.stats.local.values[EXEMPT] += 1
            return _PASS
        # The callbacks are guarded (see CallbackGuard): an int >= 0, a bounded str.
        cost = plan.cost
        if not isinstance(cost, int):
            cost = cost(info)
            if cost > limiter.capacity:
                return self._too_costly(plan, context)
        key = plan.key(info)
        try:
            decision = limiter.decide_sync(key, cost)
        except ConfigurationError:
            raise
        except Exception as exc:  # a store outage must never become a 500
            return self._storage_failed(plan, exc)
        return self._settle(plan, key, decision, context)

    def _settle(
        self, plan: Plan, key: str, decision: RateLimitDecision, context: RequestContext
    ) -> Action:
        result = decision.results[decision.governing]
        if isinstance(result, UncheckedResult):
            # fail_open admitted without asking the storage: no state to report.
            self.stats.local.values[UNCHECKED] += 1
            return _PASS
        context.recorded.append(new_recorded((plan.policies, decision)))
        if result.allowed:
            self.stats.local.values[ADMITTED] += 1
            return _PASS
        if plan.shadow:
            self.stats.add(SHADOW_REJECTED, plan.name)
            logger.info(
                "shadow mode: would have rejected %s %s for %s under %r (retry after %.3fs)",
                context.info.method,
                context.info.path,
                key,
                plan.name,
                result.retry_after,
            )
            return _PASS
        self.stats.add(REJECTED)
        return _REJECT

    def _too_costly(self, plan: Plan, context: RequestContext) -> Action:
        """A request no wait would admit: refused (413) without asking the storage."""
        if plan.shadow:
            self.stats.add(SHADOW_REJECTED, plan.name)
            logger.info(
                "shadow mode: would have refused %s %s under %r: it costs more than the "
                "limit can ever admit at once",
                context.info.method,
                context.info.path,
                plan.name,
            )
            return _PASS
        self.stats.add(TOO_COSTLY)
        return _TOO_COSTLY

    def too_costly_rejection(self, plan: Plan) -> Rejection:
        """The 413 for a request of ``plan`` that its limits can never admit."""
        limiter = plan.limiter
        assert limiter is not None
        spec = min(limiter.specs, key=lambda spec: spec.capacity)
        return too_costly_rejection(spec.describe(), spec.capacity)

    def _storage_failed(self, plan: Plan, exc: Exception) -> Action:
        self.stats.add(STORAGE_ERRORS)
        if isinstance(exc, StorageFailClosed):
            return _UNAVAILABLE  # the failover storage refused on purpose, logged there
        secrets = secrets_of(plan.limiter.storage) if plan.limiter else ()
        logger.warning(
            "rate limit %r not applied, storage failed (%s): %s",
            plan.name,
            self.on_storage_error,
            scrub(f"{type(exc).__name__}: {exc}", *secrets),
        )
        return _UNAVAILABLE if self.on_storage_error == "fail_closed" else _PASS

    def rejection(self, context: RequestContext) -> Rejection:
        """The 429 for a rejected request, carrying every recorded decision's headers."""
        return rejection_for(context.recorded, self.problem, context.take_headers())

    def context(self, info: RequestInfo) -> RequestContext:
        return RequestContext(info, self.mode, self.clock)

    def metrics(self) -> dict[str, Any]:
        """Decision counters and each limiter's own metrics."""
        stats = self.stats
        return {
            **stats.totals(),
            "shadow_by_policy": dict(stats.shadow_by_policy),
            "limiters": [limiter.get_metrics() for limiter in self.rules.limiters],
        }

    async def aclose(self) -> None:
        """Close every storage the limiters use (async clients first, then sync)."""
        for storage in self.rules.storages():
            await storage.aclose()

    def close(self) -> None:
        for storage in self.rules.storages():
            storage.close_sync()
