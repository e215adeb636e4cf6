"""What a key or cost callback gave, made usable: a bounded identity, a whole cost.

Key and cost functions are the application's code, run on every request with what
the client sent. Whatever they return or raise is a bug to fix, not a storage outage:
these helpers turn it into a defined identity or cost, and :class:`FaultLog` says
once per callback and kind of fault what to fix, so a flood of bad requests writes
a line, not a line per request. Values are never logged: a key function's input and
output are often credentials (an API key header).
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "MAX_KEY_LENGTH",
    "NEVER_FITS",
    "Fault",
    "FaultLog",
    "bounded_key",
    "checked_cost",
    "checked_key",
    "cost_of",
    "describe_exception",
    "describe_value",
    "key_of",
]

#: The longest identity stored as given; longer ones keep their head and gain a digest
#: of the whole (:func:`bounded_key`), so a key function echoing a client header cannot
#: make storage keys of many kilobytes.
MAX_KEY_LENGTH = 256
_DIGEST_MARK = "~sha256:"
_DIGEST_HEX = 32
_HEAD = MAX_KEY_LENGTH - len(_DIGEST_MARK) - _DIGEST_HEX

#: The cost charged for a cost function's ``inf``: more than any limit can admit.
NEVER_FITS = sys.maxsize

#: Past this many kinds of fault, one callback's further kinds are only counted.
_MAX_KINDS = 8


def bounded_key(key: str) -> str:
    """``key`` itself up to :data:`MAX_KEY_LENGTH` characters of UTF-8-encodable text.

    A longer key (or one with lone surrogates, which no store can encode) becomes its
    first characters, ``~sha256:`` and 32 hex digits of the SHA-256 of the whole:
    at most MAX_KEY_LENGTH characters, and two different keys stay two keys unless
    their digests collide (128 bits).
    """
    if len(key) <= MAX_KEY_LENGTH and (key.isascii() or _encodable(key)):
        return key
    whole = key.encode("utf-8", "surrogatepass")
    head = key[:_HEAD].encode("utf-8", "replace").decode("utf-8")
    return head + _DIGEST_MARK + hashlib.sha256(whole).hexdigest()[:_DIGEST_HEX]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checked_key(value: object) -> str | None:
    """``value`` as a storage identity (see :func:`bounded_key`), or None when it is not
    a non-empty str (None, bytes, an int, ``""``: a key function's bug)."""
    if type(value) is not str:
        if not isinstance(value, str):
            return None
        value = str.__str__(value)  # a str subclass: its plain text, not its __str__
    return bounded_key(value) if value else None


def checked_cost(value: object) -> tuple[int, str | None]:
    """The whole cost to charge for what a cost function returned, and the kind of
    fault (None for a whole number >= 0, which is charged as is).

    A float >= 0 is rounded up (2.5 costs 3; ``inf`` costs :data:`NEVER_FITS`, more
    than any limit admits); anything else (None, a bool, a str, NaN, a negative
    number) costs 1, what a request costs by default.
    """
    if type(value) is int:
        return (value, None) if value >= 0 else (1, "returned a negative cost")
    if isinstance(value, bool):
        return 1, "returned a bool"
    if isinstance(value, int):  # an IntEnum or another int subclass: its number
        number = int(value)
        return (number, None) if number >= 0 else (1, "returned a negative cost")
    if isinstance(value, float):
        if math.isnan(value):
            return 1, "returned NaN"
        if value < 0:
            return 1, "returned a negative cost"
        return (NEVER_FITS if math.isinf(value) else math.ceil(value)), "returned a float"
    return 1, "returned " + describe_value(value)


class Fault(NamedTuple):
    """What was wrong with a callback's answer: ``kind`` for the log line (see
    :class:`FaultLog`), ``error`` what it raised (None when it returned nonsense)."""

    kind: str
    error: Exception | None = None


def key_of(func: Callable[..., object], *args: Any, **kwargs: Any) -> str | Fault:
    """The identity ``func(*args, **kwargs)`` gives (see :func:`checked_key`), or the
    Fault when it raises or returns anything but a non-empty str."""
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        return Fault(describe_exception(exc), exc)
    if type(value) is str and 0 < len(value) <= MAX_KEY_LENGTH and value.isascii():
        return value  # the usual answer, inlined: this runs on every request
    key = checked_key(value)
    return Fault("returned " + describe_value(value)) if key is None else key


def cost_of(func: Callable[..., object], *args: Any, **kwargs: Any) -> tuple[int, Fault | None]:
    """The cost to charge for ``func(*args, **kwargs)`` (see :func:`checked_cost`; 1
    when it raises), and the Fault if there was one."""
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        return 1, Fault(describe_exception(exc), exc)
    if type(value) is int and value >= 0:
        return value, None
    cost, kind = checked_cost(value)
    return cost, None if kind is None else Fault(kind)


def describe_value(value: object) -> str:
    """``None``, ``an empty str`` or ``a bytes``: what a callback returned, without the
    value itself (it may be a credential)."""
    if value is None:
        return "None"
    if isinstance(value, str) and not value:
        return "an empty str"
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def describe_exception(exc: BaseException) -> str:
    """``raised KeyError at app.py:12 in by_tenant``: the exception's type and where it
    was raised, not its message (messages quote values: a header, a token)."""
    where = ""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is not None:
        code = traceback.tb_frame.f_code
        filename = code.co_filename.rsplit("/", 1)[-1]
        where = f" at {filename}:{traceback.tb_lineno} in {code.co_name}"
    return f"raised {type(exc).__name__}{where}"


class FaultLog:
    """Logs each kind of fault of one callback once, at ERROR, with what to fix.

    ``subject`` names the callback (``key function of rule 'POST /login'``); kinds
    are short fixed phrases (``returned None``, ``raised KeyError at ...``), so the
    lines one callback can write are few whatever the traffic.
    """

    __slots__ = ("_lock", "_seen", "logger", "subject")

    def __init__(self, logger: logging.Logger, subject: str) -> None:
        self.logger = logger
        self.subject = subject
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def report(self, kind: str, consequence: str) -> None:
        """Log ``<subject> <kind>; <consequence>`` unless this kind was logged before."""
        if kind in self._seen or len(self._seen) >= _MAX_KINDS:
            return
        with self._lock:
            if kind in self._seen or len(self._seen) >= _MAX_KINDS:
                return
            self._seen.add(kind)
        self.logger.error(
            "%s %s; %s. Logged once: later faults of this kind are only counted.",
            self.subject,
            kind,
            consequence,
        )
