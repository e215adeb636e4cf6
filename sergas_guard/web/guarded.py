"""The application's callbacks (key, cost, exempt, on_reject), wrapped so that a bug in
one is a logged programmer error with a defined outcome, never an unlimited admit and
never a 500 that a client can trigger.

Built once per rule when the middleware is constructed; on the request path a wrapped
callback costs one call and a type check more than the callback itself. Only the
storage call is left to the ``on_storage_error`` policy (see
:class:`~sergas_guard.web.engine.RateLimitEngine`).

=============================  ==========================================================
the callback                   outcome
=============================  ==========================================================
key raises / not a non-empty   the request counts under the client address (``ip:...``)
str
key longer than 256 chars      head + digest of the whole (:func:`bounded_key`)
cost raises / not an int       1; a float >= 0 is rounded up
cost above what the limit      refused with 413 (:func:`too_costly_rejection`), storage
can ever admit                 untouched
exempt raises / not a bool     not exempt: the request is counted
on_reject raises / not an app  the standard 429
=============================  ==========================================================
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from sergas_guard.ratelimit.callback_values import (
    FaultLog,
    cost_of,
    describe_exception,
    describe_value,
    key_of,
)
from sergas_guard.web.request import RequestInfo

__all__ = ["CallbackGuard", "RejectHook"]

logger = logging.getLogger("sergas_guard.web")

RequestKey = Callable[[RequestInfo], str]
CostFunc = Callable[[RequestInfo], int]
Exempt = Callable[[RequestInfo], bool]

_KEY_FIX = "it must return a non-empty str; counting the request under the client address"
_EXEMPT_FIX = "it must return a bool; the request is not exempt (it is counted)"


class CallbackGuard:
    """Wraps one middleware's callbacks; ``on_fault`` counts every fault (metrics)."""

    def __init__(self, client_key: RequestKey, on_fault: Callable[[], None]) -> None:
        self.client_key = client_key
        self.on_fault = on_fault

    def key(self, func: RequestKey, rule: str) -> RequestKey:
        """``func``, returning a bounded identity, or the client key when it fails."""
        faults = FaultLog(logger, f"key function of rule {rule!r}")
        client_key, on_fault = self.client_key, self.on_fault

        def guarded_key(request: RequestInfo) -> str:
            key = key_of(func, request)
            if isinstance(key, str):
                return key
            on_fault()
            faults.report(key.kind, _KEY_FIX)
            return client_key(request)

        return guarded_key

    def cost(self, func: CostFunc, rule: str) -> CostFunc:
        """``func``, returning a whole cost >= 0 whatever it returns or raises."""
        faults = FaultLog(logger, f"cost function of rule {rule!r}")
        on_fault = self.on_fault

        def guarded_cost(request: RequestInfo) -> int:
            cost, fault = cost_of(func, request)
            if fault is not None:
                on_fault()
                faults.report(fault.kind, f"it must return a whole number >= 0; charging {cost}")
            return cost

        return guarded_cost

    def exempt(self, func: Exempt, rule: str) -> Exempt:
        """``func``, True only when it returns True; a fault means not exempt."""
        faults = FaultLog(logger, f"exempt predicate of rule {rule!r}")
        on_fault = self.on_fault

        def guarded_exempt(request: RequestInfo) -> bool:
            try:
                value = func(request)
            except Exception as exc:
                kind = describe_exception(exc)
            else:
                if value is True or value is False:
                    return value
                kind = "returned " + describe_value(value)
            on_fault()
            faults.report(kind, _EXEMPT_FIX)
            return False

        return guarded_exempt


class RejectHook:
    """An ``on_reject`` callback whose fault (it raises, or returns something that is
    not a response) means the standard 429: :meth:`call` and :meth:`acall` give None.

    ``is_response`` tells a response of the edge's kind (an ASGI or WSGI app, an
    HttpResponse); ``expected`` names it in the log line.
    """

    def __init__(
        self,
        callback: Callable[..., Any],
        is_response: Callable[[Any], bool],
        expected: str,
        on_fault: Callable[[], None] = lambda: None,
    ) -> None:
        self.callback = callback
        self.is_response = is_response
        self.expected = expected
        self.on_fault = on_fault
        self.faults = FaultLog(logger, f"on_reject callback {_name(callback)}")

    def call(self, request: RequestInfo, decision: Any) -> Any:
        """The callback's response, or None for the standard 429."""
        try:
            return self._checked(self.callback(request, decision))
        except Exception as exc:
            return self._failed(describe_exception(exc))

    async def acall(self, request: RequestInfo, decision: Any) -> Any:
        """:meth:`call` for a callback that may return an awaitable (ASGI)."""
        try:
            replacement = self.callback(request, decision)
            if inspect.isawaitable(replacement):
                replacement = await replacement
            return self._checked(replacement)
        except Exception as exc:
            return self._failed(describe_exception(exc))

    def _checked(self, replacement: Any) -> Any:
        if replacement is None or self.is_response(replacement):
            return replacement
        return self._failed("returned " + describe_value(replacement))

    def _failed(self, kind: str) -> None:
        self.on_fault()
        self.faults.report(
            kind, f"it must return {self.expected} or None; sending the standard 429"
        )


def _name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
