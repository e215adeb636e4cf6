"""A registry of breakers by name, and the ``@circuit_breaker`` decorator that uses one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from sergas_guard import validation
from sergas_guard.circuit_breaker.breaker import CircuitBreaker, Listener
from sergas_guard.circuit_breaker.config import CircuitBreakerConfig
from sergas_guard.circuit_breaker.state import CircuitState
from sergas_guard.circuit_breaker.store import store_for
from sergas_guard.clock import SYSTEM_CLOCK, Clock
from sergas_guard.errors import ConfigurationError

__all__ = ["CircuitBreakerManager", "circuit_breaker", "default_manager"]

P = ParamSpec("P")
R = TypeVar("R")


class CircuitBreakerManager:
    """Creates breakers on first use and returns the same one for the same name.

    A breaker's config is, in order: the one passed to :meth:`get_or_create`, the
    per-name one from ``configs``, or ``default_config``. Every breaker shares the
    manager's ``storage`` (see :class:`CircuitBreaker`; a URL is resolved once), clock
    and listeners.
    """

    def __init__(
        self,
        default_config: CircuitBreakerConfig | None = None,
        *,
        configs: Mapping[str, CircuitBreakerConfig] | None = None,
        storage: Any = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        for field, given in (("default_config", default_config), *_named(configs)):
            if given is not None and not isinstance(given, CircuitBreakerConfig):
                raise ConfigurationError(
                    f"{field} must be a CircuitBreakerConfig, not {given!r:.80}", field=field
                )
        self.default_config = (
            default_config if default_config is not None else CircuitBreakerConfig()
        )
        self._configs = dict(configs or {})
        if isinstance(storage, str):
            storage = store_for(storage, clock)  # one store (one connection) for every breaker
        self.storage = storage
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CircuitBreakerManager(breakers={sorted(self._breakers)})"

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def configure(self, name: str, config: CircuitBreakerConfig) -> None:
        """Set the config used when breaker ``name`` is created.

        Raises ConfigurationError when that breaker already exists with another config.
        """
        with self._lock:
            existing = self._breakers.get(name)
            if existing is not None and existing.config != config:
                raise ConfigurationError(
                    f"circuit breaker {name!r} already exists with another config",
                    field="config",
                )
            self._configs[name] = config

    def get_or_create(
        self, name: str, config: CircuitBreakerConfig | None = None
    ) -> CircuitBreaker:
        """The breaker called ``name``, created on first use.

        Raises ConfigurationError when ``config`` differs from the config the existing
        breaker was created with (two call sites disagreeing is a bug, not a choice).
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(name)
                if breaker is None:
                    chosen = config if config is not None else self._configs.get(name)
                    if chosen is None:
                        chosen = self.default_config
                    breaker = CircuitBreaker(
                        name,
                        chosen,
                        storage=self.storage,
                        clock=self.clock,
                        listeners=tuple(self._listeners),
                    )
                    self._breakers[name] = breaker
                    return breaker
        if config is not None and config != breaker.config:
            raise ConfigurationError(
                f"circuit breaker {name!r} already exists with another config", field="config"
            )
        return breaker

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or None when it was never created."""
        return self._breakers.get(name)

    def names(self) -> list[str]:
        """Names of every breaker, sorted."""
        return sorted(self._breakers)

    def states(self) -> dict[str, CircuitState]:
        """The current state of every breaker, by name."""
        return {breaker.name: breaker.state for breaker in self}

    def get_all_metrics(self) -> dict[str, dict[str, Any]]:
        """``get_metrics()`` of every breaker, by name."""
        return {breaker.name: breaker.get_metrics() for breaker in self}

    def open_breakers(self) -> list[str]:
        """Names of the breakers that currently refuse calls (OPEN or FORCED_OPEN)."""
        return [name for name, state in self.states().items() if state.refuses_calls]

    def reset_all(self) -> None:
        """Reset every breaker to a fresh CLOSED state."""
        for breaker in self:
            breaker.reset()

    def add_listener(self, listener: Listener) -> None:
        """Listen to the events of every breaker, present and future."""
        with self._lock:
            self._listeners.append(listener)
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.add_listener(listener)


_DEFAULT_MANAGER: CircuitBreakerManager | None = None
_DEFAULT_LOCK = threading.Lock()


def default_manager() -> CircuitBreakerManager:
    """The process-wide manager that ``@circuit_breaker`` uses when given none."""
    global _DEFAULT_MANAGER
    if _DEFAULT_MANAGER is None:
        with _DEFAULT_LOCK:
            if _DEFAULT_MANAGER is None:
                _DEFAULT_MANAGER = CircuitBreakerManager()
    return _DEFAULT_MANAGER


def _named(configs: object) -> list[tuple[str, object]]:
    """``configs`` as (field, config) pairs; ConfigurationError when it is no mapping."""
    if configs is None:
        return []
    if not isinstance(configs, Mapping):
        raise ConfigurationError(
            f"configs must map breaker names to configs, not {configs!r:.80}", field="configs"
        )
    return [(f"configs[{name!r}]", config) for name, config in configs.items()]


def circuit_breaker(
    name: str,
    config: CircuitBreakerConfig | None = None,
    manager: CircuitBreakerManager | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Protect a sync or async function with breaker ``name`` from ``manager``.

    The breaker is looked up (or created) once, when the function is decorated; the
    wrapper keeps the function's signature. Calls refused by the breaker raise
    CircuitOpenError. Raises ConfigurationError for an invalid name or config.
    """
    validation.name(name, "name")
    if config is not None and not isinstance(config, CircuitBreakerConfig):
        raise ConfigurationError(
            f"config must be a CircuitBreakerConfig, not {config!r:.80}", field="config"
        )
    if manager is not None and not isinstance(manager, CircuitBreakerManager):
        raise ConfigurationError(
            f"manager must be a CircuitBreakerManager, not {manager!r:.80}", field="manager"
        )

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        owner = manager if manager is not None else default_manager()
        breaker = owner.get_or_create(name, config)
        return breaker(fn)

    return decorate
