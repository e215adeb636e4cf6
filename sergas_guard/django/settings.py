"""The ``SERGAS_GUARD_RATELIMIT`` setting: read, checked, and turned into engine options.

The setting is a dict of :class:`sergas_guard.asgi.RateLimitMiddleware`'s options
(``default_limits``, ``rules``, ``storage``, ``trusted_proxies``, ``shadow``,
``headers``, ``key_func``, ...). Settings files hold text, so functions may be given
as dotted paths (``"myapp.limits.by_tenant"``) and ``problem`` as a dict of
:class:`~sergas_guard.web.rejection.ProblemText` fields. Every mistake is reported at
start-up as a :class:`GuardSettingsError` naming the entry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.config import RateLimitConfig, parse_rate
from sergas_guard.ratelimit.limiter import RateLimiter
from sergas_guard.secrets import scrub_url
from sergas_guard.web.engine import EngineOptions, RateLimitEngine
from sergas_guard.web.headers import HeaderMode, header_mode
from sergas_guard.web.identity import ClientAddressResolver
from sergas_guard.web.rejection import ProblemText
from sergas_guard.web.rules import Limits, Rule

__all__ = ["SETTING", "GuardSettings", "GuardSettingsError", "read_settings"]

SETTING = "SERGAS_GUARD_RATELIMIT"

_EDGE_OPTIONS = frozenset({"default_limits", "rules", "on_reject"})
_KNOWN = _EDGE_OPTIONS | EngineOptions.__optional_keys__
# Options (of the setting, or of a rule) that are functions, so may be dotted paths.
_CALLABLE_OPTIONS = ("key_func", "on_reject", "clock")
_CALLABLE_RULE_FIELDS = ("key", "cost", "exempt")
_RULE_FIELDS = frozenset(Rule.__dataclass_fields__)


class GuardSettingsError(ConfigurationError, ImproperlyConfigured):  # type: ignore[misc]
    """A bad ``SERGAS_GUARD_RATELIMIT``: a ConfigurationError that Django reports as
    ImproperlyConfigured. ``field`` names the entry (``SERGAS_GUARD_RATELIMIT["rules"][1]``);
    the error it was raised from, if any, is its ``__cause__``."""


def _entry(key: str | None, index: int | None = None) -> str:
    """How the entry is written in settings.py: ``SERGAS_GUARD_RATELIMIT['rules'][1]``."""
    if key is None:
        return SETTING
    return f"{SETTING}[{key!r}]" + ("" if index is None else f"[{index}]")


@contextmanager
def _naming(entry: str) -> Iterator[None]:
    """Re-raise a ConfigurationError or ImportError as a GuardSettingsError naming ``entry``."""
    try:
        yield
    except GuardSettingsError:
        raise
    except (ConfigurationError, ImportError) as exc:
        raise GuardSettingsError(f"{entry}: {exc}", field=entry) from exc


def _check_limits(limits: object) -> None:
    """Raise ConfigurationError unless ``limits`` is limits (a bad rate string included)."""
    if isinstance(limits, str):
        parse_rate(limits)
    elif limits is not None and not isinstance(limits, RateLimitConfig | RateLimiter):
        raise ConfigurationError(
            f"limits are a rate string, a RateLimitConfig or a RateLimiter, "
            f"not {type(limits).__name__}",
            field="limits",
        )


def _importable(value: Any) -> Any:
    """A dotted path's object (settings files name functions this way), else ``value``."""
    return import_string(value) if isinstance(value, str) else value


def _rule(index: int, value: Any) -> Rule:
    with _naming(_entry("rules", index)):
        if isinstance(value, Mapping):
            fields = dict(value)
            for name in _CALLABLE_RULE_FIELDS:
                if name in fields:
                    fields[name] = _importable(fields[name])
            unknown = sorted(set(fields) - _RULE_FIELDS)
            if unknown:
                raise ConfigurationError(
                    f"unknown rule fields {unknown}; a rule has {sorted(_RULE_FIELDS)}",
                    field="rules",
                )
            value = Rule(**fields)
        if not isinstance(value, Rule):
            raise ConfigurationError(
                f"a rule is a Rule or a dict of its fields, not {type(value).__name__}",
                field="rules",
            )
        _check_limits(value.limits)  # here, so that a bad rate names its rule
        return value


@dataclass(frozen=True)
class GuardSettings:
    """The checked contents of ``SERGAS_GUARD_RATELIMIT``."""

    default_limits: Limits | None = "100/minute"
    rules: tuple[Rule, ...] = ()
    on_reject: Callable[..., Any] | None = None
    options: EngineOptions = field(default_factory=lambda: EngineOptions())

    def __repr__(self) -> str:
        # The options may hold a storage URL, password included.
        options = {k: scrub_url(v) if isinstance(v, str) else v for k, v in self.options.items()}
        return (
            f"GuardSettings(default_limits={self.default_limits!r}, rules={self.rules!r}, "
            f"on_reject={self.on_reject!r}, options={options!r})"
        )

    @classmethod
    def from_mapping(cls, values: Any) -> GuardSettings:
        """Check a setting's value. Raises GuardSettingsError naming a bad entry."""
        if not isinstance(values, Mapping):
            raise GuardSettingsError(
                f"{SETTING} must be a dict of options, not {type(values).__name__}",
                field=SETTING,
            )
        unknown = [key for key in values if key not in _KNOWN]
        if unknown:
            key = str(unknown[0])
            close = difflib.get_close_matches(key, sorted(_KNOWN), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {sorted(_KNOWN)}"
            raise GuardSettingsError(f"{_entry(key)}: unknown option{hint}", field=_entry(key))
        options = {k: v for k, v in values.items() if k not in _EDGE_OPTIONS}
        for name in _CALLABLE_OPTIONS:
            if name in values:
                with _naming(_entry(name)):
                    options[name] = _importable(values[name])
        if isinstance(options.get("problem"), Mapping):
            with _naming(_entry("problem")):
                try:
                    options["problem"] = ProblemText(**options["problem"])
                except TypeError as exc:
                    raise ConfigurationError(str(exc), field="problem") from None
        default_limits = values.get("default_limits", "100/minute")
        with _naming(_entry("default_limits")):
            _check_limits(default_limits)
        rules = values.get("rules", ())
        if isinstance(rules, str | bytes | Mapping) or not hasattr(rules, "__iter__"):
            raise GuardSettingsError(
                f"{_entry('rules')}: a list of rules, not {type(rules).__name__}",
                field=_entry("rules"),
            )
        on_reject = options.pop("on_reject", None)
        if on_reject is not None and not callable(on_reject):
            entry = _entry("on_reject")
            raise GuardSettingsError(f"{entry}: not callable", field=entry)
        return cls(
            default_limits,
            tuple(_rule(i, rule) for i, rule in enumerate(rules)),
            on_reject,
            cast(EngineOptions, options),
        )

    def engine(self) -> RateLimitEngine:
        """The engine these settings describe. Raises GuardSettingsError."""
        try:
            return RateLimitEngine(self.default_limits, self.rules, **self.options)
        except ConfigurationError as exc:
            raise GuardSettingsError(
                f"{_entry(self._entry_of(exc.field))}: {exc}",
                field=_entry(self._entry_of(exc.field)),
            ) from exc

    def _entry_of(self, error_field: str | None) -> str | None:
        """Which entry of the setting an engine's error ``field`` is about, if known."""
        if error_field in _KNOWN:
            return error_field
        if error_field in _RULE_FIELDS:  # limits were checked: a rule with none to use
            return "rules"
        return None

    def mode(self) -> HeaderMode:
        """The ``headers`` option. Raises GuardSettingsError."""
        with _naming(_entry("headers")):
            return header_mode(self.options.get("headers", HeaderMode.IETF))

    def resolver(self) -> ClientAddressResolver:
        """The client-address resolver of the proxy options. Raises GuardSettingsError."""
        options = self.options
        try:
            return ClientAddressResolver(
                options.get("trusted_proxies", ()),
                proxy_header=options.get("proxy_header", "x-forwarded-for"),
                ipv6_prefix=options.get("ipv6_prefix", 64),
            )
        except ConfigurationError as exc:
            raise GuardSettingsError(
                f"{_entry(exc.field)}: {exc}", field=_entry(exc.field)
            ) from exc

    def problem(self) -> ProblemText:
        return self.options.get("problem") or ProblemText()


def read_settings() -> GuardSettings:
    """``settings.SERGAS_GUARD_RATELIMIT`` checked (absent: the defaults).

    Raises GuardSettingsError naming the bad entry.
    """
    return GuardSettings.from_mapping(getattr(django_settings, SETTING, {}))
