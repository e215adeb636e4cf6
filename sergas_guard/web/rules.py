"""Rules: which limits apply to which requests, compiled once into plans.

A :class:`Rule` names a path pattern (``/items/{id}``, ``/files/{p:path}``, or a prefix
``/api/*``) and optionally methods; the first rule that matches a request decides its
limits, key, cost and exemptions. Requests that match no rule get the default limits.
Each rule counts in a namespace of its own (a limiter named after the rule), so two
routes never share a budget unless they name the same ``group``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sergas_guard import validation
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.bounds import MAX_COUNT
from sergas_guard.ratelimit.config import RateLimitConfig
from sergas_guard.ratelimit.limiter import RateLimiter, StorageErrorPolicy
from sergas_guard.ratelimit.result import RateLimitStrategy
from sergas_guard.ratelimit.stores.base import RateLimitStorage
from sergas_guard.ratelimit.stores.memory import MemoryStorage
from sergas_guard.validation import whole
from sergas_guard.web.guarded import CallbackGuard
from sergas_guard.web.headers import PolicySet
from sergas_guard.web.keys import KeyFunction, client_ip
from sergas_guard.web.request import RequestInfo

__all__ = [
    "Plan",
    "Rule",
    "RuleLike",
    "RuleSet",
    "build_limiter",
    "compile_path",
    "resolve_storage",
]

RequestKey = Callable[[RequestInfo], str]
CostFunc = Callable[[RequestInfo], int]
Exempt = Callable[[RequestInfo], bool]
Limits = str | RateLimitConfig | RateLimiter

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")

# What each convertor matches. Where the routers we front disagree, the widest wins, so
# that no router serves a path its rule misses: Starlette's ``path`` accepts an empty
# rest (``/files/`` runs ``/files/{p:path}``), werkzeug's ``int`` accepts any Unicode
# digit (``/items/١٢``). ``.`` stops at a newline in all three routers, and here too.
_CONVERTORS = {"str": "[^/]+", "path": ".*", "int": r"\d+"}
# Starlette anchors its routes with ``$``, which also matches before one final newline:
# ``POST /login%0A`` runs the ``/login`` route. Werkzeug and Django anchor with ``\Z``.
_END = r"\n?\Z"
# A prefix rule covers everything below it, newlines included.
_BELOW = r"(?s:/.*)?"


def compile_path(pattern: str) -> Callable[[str], bool]:
    """A matcher for ``/items/{id}`` (one segment), ``{name:path}`` (the rest) or ``/x/*``.

    It matches every path a router (Starlette, werkzeug, Django) would route to the
    same pattern: a final newline is allowed as Starlette allows it, and convertors
    take the widest of the routers' definitions (see ``_CONVERTORS``).
    Raises ConfigurationError for a pattern not starting with ``/`` or an unknown convertor.
    """
    if not pattern.startswith("/"):
        raise ConfigurationError(f"path pattern {pattern!r} must start with '/'", field="path")
    prefix = pattern.endswith("*")
    body = pattern[:-1].rstrip("/") if prefix else pattern
    if not prefix and "{" not in body:
        return frozenset((body, body + "\n")).__contains__
    parts, last = [], 0
    for match in _PARAM.finditer(body):
        convertor = match.group(2) or "str"
        if convertor not in _CONVERTORS:
            raise ConfigurationError(
                f"unknown convertor {convertor!r} in {pattern!r} (str, int or path)", field="path"
            )
        parts.append(re.escape(body[last : match.start()]))
        parts.append(_CONVERTORS[convertor])
        last = match.end()
    parts.append(re.escape(body[last:]))
    regex = "".join(parts) + (_BELOW if prefix else "")
    return re.compile(regex + _END).match  # type: ignore[return-value]


@dataclass(frozen=True)
class Rule:
    """Limits for the requests whose path matches ``path`` (and method, if given).

    ``limits``: a rate string, a RateLimitConfig or a ready RateLimiter; None means the
    middleware's default limits, counted for this rule alone. ``key`` and ``cost``
    (an int, or a function of the RequestInfo) default to the middleware's. ``exempt``
    (True, or a predicate of the RequestInfo) lets requests through unlimited and
    without headers. Rules with the same ``group`` share one budget. ``shadow``
    overrides the middleware's shadow mode. ``name`` names the policy in headers.
    """

    path: str
    limits: Limits | None = None
    methods: Collection[str] | str | None = None
    key: RequestKey | None = None
    cost: int | CostFunc = 1
    exempt: bool | Exempt = False
    group: str | None = None
    shadow: bool | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ConfigurationError(f"path must be a string, not {self.path!r:.80}", field="path")
        compile_path(self.path)  # validate early
        if not isinstance(self.limits, str | RateLimitConfig | RateLimiter | None):
            raise ConfigurationError(
                f"limits must be a rate string, RateLimitConfig or RateLimiter, "
                f"not {self.limits!r:.80}",
                field="limits",
            )
        _check_methods(self.methods)
        if not callable(self.cost):
            whole(self.cost, "cost", minimum=0, maximum=MAX_COUNT)
        if self.key is not None and not callable(self.key):
            raise ConfigurationError("key must be a function of the request", field="key")
        if not isinstance(self.exempt, bool) and not callable(self.exempt):
            raise ConfigurationError("exempt must be a bool or a predicate", field="exempt")
        for field in ("group", "name"):
            value = getattr(self, field)
            if value is not None:
                validation.name(value, field)
        if self.shadow is not None:
            validation.flag(self.shadow, "shadow")

    def method_set(self) -> frozenset[str] | None:
        if self.methods is None:
            return None
        methods = {self.methods} if isinstance(self.methods, str) else set(self.methods)
        upper = {method.upper() for method in methods}
        if "GET" in upper:
            upper.add("HEAD")  # servers answer HEAD with the GET route
        return frozenset(upper)

    def display_name(self) -> str:
        if self.name:
            return self.name
        methods = self.method_set()
        if methods is None:
            return self.path
        return ",".join(sorted(methods - {"HEAD"} or methods)) + " " + self.path


# An HTTP method is a token (RFC 9110, section 9.1): one is matched as the server
# reads it, so anything else could never match and is surely a mistake.
_METHOD_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _check_methods(methods: object) -> None:
    """Raise ConfigurationError unless ``methods`` is None, a method, or a collection of them."""
    if methods is None:
        return
    listed = (methods,) if isinstance(methods, str) else methods
    if not isinstance(listed, Collection) or isinstance(listed, bytes | Mapping):
        raise ConfigurationError(
            f"methods must be a method name or a collection of them, not {methods!r:.80}",
            field="methods",
        )
    if not listed:
        raise ConfigurationError(
            "methods must name at least one method (None matches every method)", field="methods"
        )
    for method in listed:
        if not isinstance(method, str) or not _METHOD_TOKEN.match(method):
            raise ConfigurationError(
                f"methods must hold HTTP method names such as 'POST', not {method!r:.80}",
                field="methods",
            )


#: A Rule, or a mapping of its fields (``{"path": "/login", "limits": "5/minute"}``).
RuleLike = Rule | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a matched request; ``limiter`` None means let it through untouched."""

    name: str
    limiter: RateLimiter | None
    key: RequestKey
    cost: int | CostFunc
    exempt: Exempt | None
    shadow: bool
    policies: PolicySet  # empty when there is no limiter
    #: The limiter's state is in this process's memory: decide on its sync face, which
    #: never waits for I/O, and spare the event loop two coroutines per request.
    inline: bool = False


def _in_memory(limiter: RateLimiter) -> bool:
    return type(limiter.storage) is MemoryStorage


def resolve_storage(
    storage: RateLimitStorage | str | None, clock: Clock | None = None
) -> RateLimitStorage:
    """A storage object from a storage, a URL, or None (a private MemoryStorage)."""
    if storage is None:
        return MemoryStorage(clock=clock or SYSTEM_CLOCK)
    if isinstance(storage, str):
        from sergas_guard.ratelimit.stores.url import storage_from_url

        built: RateLimitStorage = storage_from_url(storage)
        return built
    return storage


def build_limiter(
    limits: Limits,
    scope: str,
    storage: RateLimitStorage,
    *,
    strategy: RateLimitStrategy | str | None = None,
    clock: Clock | None = None,
    on_storage_error: StorageErrorPolicy | None = None,
) -> RateLimiter:
    """The limiter enforcing ``limits``, counting in the namespace ``web:<scope>``.

    A ready RateLimiter is used as is (with its own storage and name); a config keeps
    its name unless it is the default one. Raises ConfigurationError for bad limits.
    """
    if isinstance(storage, MemoryStorage):
        on_storage_error = None  # memory cannot fail
    # Braces would become a Redis Cluster hash tag inside the storage key.
    name = "web:" + scope.replace("{", "<").replace("}", ">")
    if isinstance(limits, RateLimiter):
        return limits
    if isinstance(limits, RateLimitConfig):
        config = limits
        if limits.name == "default":
            config = limits.model_copy(update={"name": name})
        return RateLimiter(config, storage, clock=clock, on_storage_error=on_storage_error)
    if isinstance(limits, str):
        return RateLimiter(
            limits,
            storage,
            name=name,
            strategy=strategy,
            clock=clock,
            on_storage_error=on_storage_error,
        )
    raise ConfigurationError(
        f"limits must be a rate string, RateLimitConfig or RateLimiter, "
        f"not {type(limits).__name__}",
        field="limits",
    )


#: How many (method, path) pairs a RuleSet remembers, and the longest path it remembers.
_CACHED = 2048
_CACHED_PATH = 1024

NO_POLICIES = PolicySet.build("exempt", ())
EXEMPT = Plan("exempt", None, client_ip, 0, None, False, NO_POLICIES)


class RuleSet:
    """The compiled rules of one middleware, and the limiters they count with."""

    def __init__(
        self,
        rules: Collection[RuleLike],
        default_limits: Limits | None,
        *,
        storage: RateLimitStorage,
        key: RequestKey,
        strategy: RateLimitStrategy | str | None,
        shadow: bool,
        on_storage_error: StorageErrorPolicy | None,
        clock: Clock | None,
        default_name: str = "default",
        client_key: RequestKey | None = None,
        guard: CallbackGuard | None = None,
    ) -> None:
        self._client_key = client_key
        self._guard = guard or CallbackGuard(client_key or client_ip.func, lambda: None)
        self.storage = storage
        self._strategy = strategy
        self._policy = on_storage_error
        self._clock = clock
        self._default_limits = default_limits
        self._groups: dict[str, tuple[Limits | None, RateLimiter]] = {}
        self.limiters: list[RateLimiter] = []
        self.default: Plan = EXEMPT
        if default_limits is not None:
            limiter = self._limiter(default_limits, default_name)
            policies = PolicySet.build(default_name, limiter.specs)
            self.default = Plan(
                default_name,
                limiter,
                self._direct(key, default_name),
                1,
                None,
                shadow,
                policies,
                _in_memory(limiter),
            )
        self._rules: list[tuple[Callable[[str], object], frozenset[str] | None, Plan]] = []
        for rule in rules:
            if isinstance(rule, Mapping):
                try:
                    rule = Rule(**rule)
                except TypeError as exc:
                    raise ConfigurationError(f"bad rule {rule!r}: {exc}", field="rules") from None
            if not isinstance(rule, Rule):
                raise ConfigurationError(
                    f"rules must be Rule objects or mappings of Rule fields, "
                    f"not {type(rule).__name__}",
                    field="rules",
                )
            plan = self._plan(rule, key, shadow)
            self._rules.append((compile_path(rule.path), rule.method_set(), plan))
        self.match: Callable[[str, str], Plan] = self._only_default
        if self._rules:
            self.match = self._cached_match()

    def _plan(self, rule: Rule, key: RequestKey, shadow: bool) -> Plan:
        name = rule.group or rule.display_name()
        exempt = None if isinstance(rule.exempt, bool) else rule.exempt
        if rule.exempt is True:
            return Plan(name, None, key, 0, None, False, NO_POLICIES)
        limits = rule.limits if rule.limits is not None else self._default_limits
        if limits is None:
            raise ConfigurationError(
                f"rule {name!r} has no limits and there are no default limits", field="limits"
            )
        if rule.group is None:
            limiter = self._limiter(limits, "rule:" + name)
        else:
            limiter = self._group_limiter(rule.group, rule.limits)
        shadowed = shadow if rule.shadow is None else rule.shadow
        policies = PolicySet.build(name, limiter.specs)
        plan_key = self._direct(rule.key or key, name)
        cost = rule.cost
        if isinstance(cost, int):
            limiter.validate_cost(cost)  # a fixed cost the limits never admit: say so now
        else:
            cost = self._guard.cost(cost, name)
        if exempt is not None:
            exempt = self._guard.exempt(exempt, name)
        return Plan(name, limiter, plan_key, cost, exempt, shadowed, policies, _in_memory(limiter))

    def _direct(self, key: RequestKey, rule: str) -> RequestKey:
        """The plain function inside a KeyFunction: the engine always passes a RequestInfo.

        :data:`client_ip` becomes the resolver's cached ``client_key`` when given; any
        other function is guarded (a bounded identity, the client's when it fails).
        """
        if key is client_ip:
            return self._client_key or client_ip.func
        return self._guard.key(key.func if isinstance(key, KeyFunction) else key, rule)

    def _group_limiter(self, group: str, limits: Limits | None) -> RateLimiter:
        known = self._groups.get(group)
        if known is None:
            chosen = limits if limits is not None else self._default_limits
            assert chosen is not None
            limiter = self._limiter(chosen, "group:" + group)
            self._groups[group] = (limits, limiter)
            return limiter
        if limits is not None and known[0] is not None and limits != known[0]:
            raise ConfigurationError(
                f"rules of group {group!r} give different limits ({known[0]!r}, {limits!r}); "
                "give them on one rule only",
                field="group",
            )
        return known[1]

    def _limiter(self, limits: Limits, scope: str) -> RateLimiter:
        limiter = build_limiter(
            limits,
            scope,
            self.storage,
            strategy=self._strategy,
            clock=self._clock,
            on_storage_error=self._policy,
        )
        self.limiters.append(limiter)
        return limiter

    def _only_default(self, method: str, path: str) -> Plan:
        return self.default

    def _cached_match(self) -> Callable[[str, str], Plan]:
        """:meth:`_match` behind an LRU cache of recent (method, path) pairs.

        Clients choose the paths, so the cache is bounded in entries and, by leaving
        long paths out, in bytes: at most ``_CACHED`` entries of ``_CACHED_PATH`` chars.
        """
        uncached = self._match
        cached = functools.lru_cache(maxsize=_CACHED)(uncached)

        def match(method: str, path: str) -> Plan:
            return cached(method, path) if len(path) <= _CACHED_PATH else uncached(method, path)

        return match

    def _match(self, method: str, path: str) -> Plan:
        # Methods are compared case-insensitively: werkzeug and Django upper-case the
        # method before dispatching (``post`` runs the POST view).
        method = method.upper()
        for matches, methods, plan in self._rules:
            if (methods is None or method in methods) and matches(path):
                return plan
        return self.default

    def storages(self) -> list[RateLimitStorage]:
        """Each distinct storage the limiters use, once."""
        seen: dict[int, RateLimitStorage] = {}
        for limiter in self.limiters:
            seen.setdefault(id(limiter.storage), limiter.storage)
        return list(seen.values())
