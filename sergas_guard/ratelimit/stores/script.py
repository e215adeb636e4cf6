"""The rate-limit Lua script: its source, and the pure encoding of calls and replies.

The script is assembled once from the package data in
:mod:`sergas_guard.ratelimit.strategies`: shared helpers (``common.lua``), one file per
strategy beside its Python twin (``token_bucket.lua`` next to ``token_bucket.py``), and
the entry point (``decide.lua``) that decides every limit of one request, all or
nothing. Nothing here performs I/O on Redis; the storage
sends what :func:`encode_call` (or, through redis-py's command machinery on a cluster,
:func:`script_args`) builds and reads replies with :func:`parse_reply`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from sergas_guard.errors import ConfigurationError, StorageError
from sergas_guard.ratelimit.bounds import check_limit
from sergas_guard.ratelimit.result import (
    US_PER_SECOND,
    LimitSpec,
    RateLimitResult,
    RateLimitStrategy,
)
from sergas_guard.ratelimit.stores.base import LimitCheck, too_costly
from sergas_guard.redis.scripts import Script

__all__ = [
    "DECIDE",
    "DECIDE_SCRIPT",
    "DECIDE_SHA",
    "encode_call",
    "parse_reply",
    "script_args",
    "spec_arg",
]

# Order matters: helpers first, the entry point last.
_PARTS = (
    "common.lua",
    "fixed_window.lua",
    "sliding_window.lua",
    "sliding_log.lua",
    "token_bucket.lua",
    "leaky_bucket.lua",
    "decide.lua",
)

_CODES = {
    RateLimitStrategy.FIXED_WINDOW: "fw",
    RateLimitStrategy.SLIDING_WINDOW: "sw",
    RateLimitStrategy.SLIDING_LOG: "sl",
    RateLimitStrategy.TOKEN_BUCKET: "tb",
    RateLimitStrategy.LEAKY_BUCKET: "lb",
}


def _load_source() -> str:
    folder = resources.files("sergas_guard.ratelimit.strategies")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in _PARTS)


DECIDE_SCRIPT = _load_source()
DECIDE_SHA = hashlib.sha1(DECIDE_SCRIPT.encode("utf-8")).hexdigest()
#: The script for :mod:`sergas_guard.redis` clients (which load it on each connection).
DECIDE = Script(DECIDE_SCRIPT)


_SPEC_FIELDS = ("limit", "window", "burst")


@lru_cache(maxsize=1024)
def spec_arg(spec: LimitSpec) -> bytes:
    """The script argument describing one limit: its two-letter strategy code, then
    limit, window (µs) and burst as little-endian doubles.

    One pre-encoded argument per limit (cached: specs are few and frozen) keeps the
    work per call small on both ends. Raises ConfigurationError for a limit the script
    cannot decide exactly (:func:`~sergas_guard.ratelimit.bounds.check_limit`, the check
    every RateLimitConfig passed at construction: only a hand-built LimitSpec can fail it).
    """
    check_limit(spec.strategy, spec.limit, spec.window_us, spec.burst, fields=_SPEC_FIELDS)
    return _CODES[spec.strategy].encode() + struct.pack(
        "<ddd", spec.limit, spec.window_us, spec.burst
    )


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


# The constant head of each call, encoded once: the command and the script (its SHA1,
# or its source when Redis has lost it from its cache).
_EVALSHA_HEAD = _bulk(b"EVALSHA") + _bulk(DECIDE_SHA.encode())
_EVAL_HEAD = _bulk(b"EVAL") + _bulk(DECIDE_SCRIPT.encode("utf-8"))
# The common call, one limit on the server's clock, has six parts: EVALSHA, the SHA1,
# the key count 1, the key, the cost and the limit. Its constant head and the usual
# costs are encoded once.
_ONE_KEY = b"*6\r\n" + _EVALSHA_HEAD + _bulk(b"1")
_SMALL_COSTS = tuple(_bulk(b"%d" % cost) for cost in range(64))


@lru_cache(maxsize=1024)
def _spec_bulk_of(spec: LimitSpec) -> bytes:
    return _bulk(spec_arg(spec))


# The encoded argument of each spec object in use, by identity: hashing a LimitSpec (a
# dataclass: its fields, in Python) costs more than the rest of encoding a call. Each
# entry keeps its spec alive, so an id is never reused while it is here; bounded.
_BY_IDENTITY: dict[int, tuple[LimitSpec, bytes]] = {}


def _spec_bulk(spec: LimitSpec) -> bytes:
    entry = _BY_IDENTITY.get(id(spec))
    if entry is not None and entry[0] is spec:
        return entry[1]
    encoded = _spec_bulk_of(spec)
    if len(_BY_IDENTITY) >= 1024:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(spec)] = (spec, encoded)
    return encoded


def encode_call(
    checks: Sequence[LimitCheck], cost: int, now_us: int | None, *, source: bool = False
) -> bytes:
    """One decision as the RESP bytes of ``EVALSHA`` (``EVAL`` with ``source=True``).

    The same KEYS and ARGV as :func:`script_args`, encoded straight to the wire: redis-py's
    generic packer costs more per call than the round trip's Redis work (keys are UTF-8,
    as redis-py encodes them by default). Raises ConfigurationError like
    :func:`script_args`.
    """
    if len(checks) == 1 and now_us is None and not source and 0 <= cost < 64:
        key, spec = checks[0]
        if cost > spec.capacity:
            raise too_costly(cost, spec)
        encoded = key.encode()
        return b"%b$%d\r\n%b\r\n%b%b" % (
            _ONE_KEY,
            len(encoded),
            encoded,
            _SMALL_COSTS[cost],
            _spec_bulk(spec),
        )
    if not checks:
        raise ConfigurationError("a decision needs at least one limit", field="checks")
    parts = [b""]  # the header, once the argument count is known
    specs = []
    for key, spec in checks:
        if cost > spec.capacity:
            raise too_costly(cost, spec)
        parts.append(_bulk(key.encode()))
        specs.append(_spec_bulk(spec))
    parts.append(_bulk(b"%d" % cost))
    parts += specs
    count = 4 + 2 * len(checks)
    if now_us is not None:
        parts.append(_bulk(b"%d" % now_us))
        count += 1
    head = _EVAL_HEAD if source else _EVALSHA_HEAD
    parts[0] = b"*%d\r\n%b%b" % (count, head, _bulk(b"%d" % len(checks)))
    return b"".join(parts)


def script_args(
    checks: Sequence[LimitCheck], cost: int, now_us: int | None
) -> tuple[list[str], list[int | bytes]]:
    """KEYS and ARGV for one decision: the cost, one limit per key, then ``now_us`` if given.

    Raises ConfigurationError when ``cost`` exceeds a limit's capacity: such a request
    could never be admitted, and a sliding log would have to hold it entry by entry.
    """
    if not checks:
        raise ConfigurationError("a decision needs at least one limit", field="checks")
    keys = []
    args: list[int | bytes] = [cost]
    for key, spec in checks:
        if cost > spec.capacity:
            raise too_costly(cost, spec)
        keys.append(key)
        args.append(spec_arg(spec))
    if now_us is not None:
        args.append(now_us)
    return keys, args


_new_tuple = tuple.__new__


def parse_reply(reply: object, checks: Sequence[LimitCheck]) -> list[RateLimitResult]:
    """The script's reply (five integers per limit in one string) as results, in order.

    The script gives both times in whole microseconds; dividing by 10^6 here yields the
    very float the Python strategy computes from the same integer.
    Raises StorageError when the reply does not have the expected shape.
    """
    fields = reply.split() if type(reply) is bytes or isinstance(reply, bytes | str) else ()
    make = RateLimitResult._make
    if len(fields) == 5 and len(checks) == 1:  # one limit: the common case, unrolled
        allowed, limit, remaining, retry_us, reset_us = fields
        # tuple.__new__ is what _make does, without its Python frame.
        return [
            _new_tuple(
                RateLimitResult,
                (
                    allowed == b"1",
                    int(limit),
                    int(remaining),
                    int(retry_us) / US_PER_SECOND,
                    int(reset_us) / US_PER_SECOND,
                ),
            )
        ]
    if len(fields) != 5 * len(checks):
        raise StorageError(f"unexpected reply from the rate-limit script: {reply!r:.200}")
    return [
        make(
            (
                int(fields[i]) == 1,
                int(fields[i + 1]),
                int(fields[i + 2]),
                int(fields[i + 3]) / US_PER_SECOND,
                int(fields[i + 4]) / US_PER_SECOND,
            )
        )
        for i in range(0, len(fields), 5)
    ]
