"""Checks every constructor runs on its arguments, raising ConfigurationError naming the field.

Each check takes ``error``, the ConfigurationError subclass to raise (the health
checks raise :class:`~sergas_guard.errors.HealthCheckError`, one of them).

Configuration is validated once, at construction, so a bad value fails at start-up
with a message naming the setting and the value, never as a TypeError from deep inside
or on the first request. The pydantic models get the same rules from
:class:`~sergas_guard.config.GuardModel`; plain constructors call these helpers.

The bounds every storage can represent live here too: :data:`MAX_SECONDS` for any
duration (so a deadline or a TTL computed from it stays a finite number that threads,
asyncio, Redis and Lua all accept) and :data:`MAX_TEXT_LENGTH` for free text that is
stored and logged. The rate-limit bounds are in :mod:`sergas_guard.ratelimit.bounds`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from sergas_guard.errors import ConfigurationError

__all__ = [
    "MAX_SECONDS",
    "MAX_TEXT_LENGTH",
    "callable_or_none",
    "choice",
    "flag",
    "name",
    "number",
    "seconds",
    "strings",
    "text",
    "valid_name",
    "whole",
]

#: The longest duration any setting may name: 100 years, in seconds. Far beyond any
#: useful timeout or window, and small enough that "now + duration" stays exact in
#: microseconds as a double (what Redis's Lua computes with) for a century to come, and
#: below ``threading.TIMEOUT_MAX``.
MAX_SECONDS = 100 * 365 * 86_400

#: The longest free text (a flag's description, ...) a definition may hold: it is
#: stored with the definition and may be logged.
MAX_TEXT_LENGTH = 4096

T = TypeVar("T")


def _shown(value: object) -> str:
    """The value as a message shows it: its repr, cut short (a message is one line)."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _fail(
    field: str, value: object, expected: str, error: type[ConfigurationError]
) -> ConfigurationError:
    return error(f"{field} must be {expected}, not {_shown(value)}", field=field)


def number(
    value: object,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    error: type[ConfigurationError] = ConfigurationError,
) -> float:
    """``value`` as a finite float within the bounds; ConfigurationError naming ``field``.

    bool is refused (``True`` is not a number of anything), as are NaN and infinities.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, value, "a number", error)
    if isinstance(value, int) and abs(value) > 2**1023:
        raise _fail(field, value, "a representable number", error)
    result = float(value)
    if not math.isfinite(result):
        raise _fail(field, value, "a finite number", error)
    if minimum is not None:
        if exclusive_minimum and result <= minimum:
            expected = "a positive number" if minimum == 0 else f"greater than {minimum:g}"
            raise _fail(field, value, expected, error)
        if result < minimum:
            raise _fail(field, value, f"at least {minimum:g}", error)
    if maximum is not None and result > maximum:
        raise _fail(field, value, f"at most {maximum:g}", error)
    return result


def whole(
    value: object,
    field: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[ConfigurationError] = ConfigurationError,
) -> int:
    """``value`` as an int within the bounds (bool and non-integral numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, value, "a whole number", error)
    if minimum is not None and value < minimum:
        raise _fail(field, value, f"at least {minimum}", error)
    if maximum is not None and value > maximum:
        raise _fail(field, value, f"at most {maximum}", error)
    return value


def seconds(
    value: object,
    field: str,
    *,
    allow_zero: bool = False,
    maximum: float = MAX_SECONDS,
    error: type[ConfigurationError] = ConfigurationError,
) -> float:
    """A duration in seconds: finite, positive (or zero when allowed), at most ``maximum``."""
    return number(
        value, field, minimum=0.0, maximum=maximum, exclusive_minimum=not allow_zero, error=error
    )


def flag(
    value: object, field: str, *, error: type[ConfigurationError] = ConfigurationError
) -> bool:
    """A bool: ``1``, ``"yes"`` and the like are refused, as they usually hide a mistake."""
    if not isinstance(value, bool):
        raise _fail(field, value, "True or False", error)
    return value


def text(
    value: object,
    field: str,
    *,
    max_length: int = MAX_TEXT_LENGTH,
    error: type[ConfigurationError] = ConfigurationError,
) -> str:
    """A str of at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise _fail(field, value, "a string", error)
    if len(value) > max_length:
        raise error(
            f"{field} must be at most {max_length} characters, not {len(value)}", field=field
        )
    return value


def name(
    value: object,
    field: str = "name",
    *,
    max_length: int = 200,
    error: type[ConfigurationError] = ConfigurationError,
) -> str:
    """A non-empty str of at most ``max_length`` characters."""
    result = text(value, field, max_length=max_length, error=error)
    if not result.strip():
        raise _fail(field, value, "a non-empty string", error)
    return result


valid_name = name  # for modules whose own parameters are called ``name``


def strings(
    value: object, field: str, *, error: type[ConfigurationError] = ConfigurationError
) -> tuple[str, ...]:
    """A collection of str as a tuple; one str is refused (it would be taken letter by letter)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _fail(field, value, "a list of strings", error)
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise error(f"{field} must hold only strings, not {_shown(item)}", field=field)
    return items


def choice(
    value: object,
    field: str,
    allowed: Iterable[str],
    *,
    error: type[ConfigurationError] = ConfigurationError,
) -> str:
    """One of ``allowed``."""
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise _fail(field, value, "one of " + ", ".join(options), error)
    return value


def callable_or_none(
    value: T, field: str, *, error: type[ConfigurationError] = ConfigurationError
) -> T:
    """``value`` unchanged if it is a callable or None."""
    if value is not None and not callable(value):
        raise _fail(field, value, "a function (or None)", error)
    return value
