"""Rate-limit response headers: draft-ietf-httpapi-ratelimit-headers, and the legacy trio.

``RateLimit-Policy`` lists every policy that applied (a structured-field List of
Strings with ``q`` = quota units and ``w`` = window seconds); ``RateLimit`` gives the
most restrictive one's state (``r`` = remaining units, ``t`` = seconds until it is
worth trying again: the wait when rejected, else until the quota is back to full).
``legacy`` is ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (Reset in epoch seconds,
as GitHub, slowapi and Flask-Limiter send it).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sergas_guard.clock import Clock
from sergas_guard.errors import ConfigurationError
from sergas_guard.ratelimit.limiter import RateLimitDecision
from sergas_guard.ratelimit.result import LimitSpec, RateLimitResult, most_restrictive

__all__ = [
    "HeaderMode",
    "PolicySet",
    "RecordedDecision",
    "header_mode",
    "rate_limit_headers",
    "seconds_until_retry",
]

HeaderList = list[tuple[bytes, bytes]]


class HeaderMode(enum.StrEnum):
    """Which rate-limit headers responses carry."""

    IETF = "ietf"
    LEGACY = "legacy"
    BOTH = "both"
    NONE = "none"


def header_mode(value: HeaderMode | str) -> HeaderMode:
    """Validate a ``headers=`` option; raises ConfigurationError for an unknown mode."""
    try:
        return HeaderMode(value)
    except ValueError:
        raise ConfigurationError(
            f"headers must be one of ietf, legacy, both, none; not {value!r}", field="headers"
        ) from None


# Enum members looked up on their class cost a Python-level attribute lookup each time.
_IETF = HeaderMode.IETF
_LEGACY = HeaderMode.LEGACY
_NONE = HeaderMode.NONE


def _sf_string(text: str) -> str:
    """A structured-field String (RFC 8941 §3.3.3): quoted, with ``"`` and ``\\`` escaped."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The policies of one limiter, named for headers; built once per limiter.

    A limiter with one limit has one policy named ``scope``; with several, each is
    named ``scope-<window>s`` so the names stay distinct.
    """

    names: tuple[str, ...]
    quoted: tuple[str, ...]
    policy_header: bytes
    #: ``b'"name";r='`` per policy: the start of its RateLimit value, built once.
    rate_prefixes: tuple[bytes, ...]
    #: The ``RateLimit-Policy`` header of this set alone, ready to send.
    policy_item: tuple[bytes, bytes]

    @classmethod
    def build(cls, scope: str, specs: Sequence[LimitSpec]) -> PolicySet:
        if len(specs) == 1:
            names: tuple[str, ...] = (scope,)
        else:
            names = tuple(f"{scope}-{spec.window_seconds:g}s" for spec in specs)
        quoted = tuple(_sf_string(name) for name in names)
        items = [
            f"{q};q={spec.limit};w={max(1, math.ceil(spec.window_seconds))}"
            for q, spec in zip(quoted, specs, strict=True)
        ]
        prefixes = tuple(f"{q};r=".encode() for q in quoted)
        header = ", ".join(items).encode()
        return cls(names, quoted, header, prefixes, (b"ratelimit-policy", header))


class RecordedDecision(NamedTuple):
    """A decision taken for a request, with the policies that name its limits."""

    policies: PolicySet
    decision: RateLimitDecision

    @property
    def violated(self) -> list[str]:
        """Names of the policies that rejected the request."""
        return [
            name
            for name, result in zip(self.policies.names, self.decision.results, strict=True)
            if not result.allowed
        ]


def seconds_until_retry(result: RateLimitResult) -> int:
    """The ``t`` of a result in whole seconds, rounded up."""
    seconds = result.reset_after if result.allowed else result.retry_after
    return max(0, math.ceil(seconds))


def _governing(recorded: Sequence[RecordedDecision]) -> RecordedDecision:
    return recorded[most_restrictive([entry.decision.result for entry in recorded])]


def rate_limit_headers(
    recorded: Sequence[RecordedDecision], mode: HeaderMode, clock: Clock
) -> HeaderList:
    """The response headers for the decisions taken for one request (none if none)."""
    if len(recorded) == 1 and mode is _IETF:
        # Every request of the default configuration: only r and t are formatted here.
        # Fields by index: a NamedTuple's attribute is a descriptor call each time.
        policies, decision = recorded[0]
        governing = decision[3]
        result = decision[2][governing]  # allowed, limit, remaining, retry_after, reset_after
        seconds = result[4] if result[0] else result[3]
        rate = b"%d;t=%d" % (result[2], math.ceil(seconds) if seconds > 0 else 0)
        return [policies.policy_item, (b"ratelimit", policies.rate_prefixes[governing] + rate)]
    if not recorded or mode is _NONE:
        return []
    if len(recorded) == 1:
        entry = recorded[0]
        policy = entry.policies.policy_header
    else:
        entry = _governing(recorded)
        policy = b", ".join(each.policies.policy_header for each in recorded)
    result = entry.decision.result
    t = seconds_until_retry(result)
    headers: HeaderList = []
    if mode is not _LEGACY:
        prefix = entry.policies.rate_prefixes[entry.decision.governing]
        headers.append((b"ratelimit-policy", policy))
        headers.append((b"ratelimit", prefix + b"%d;t=%d" % (result.remaining, t)))
    if mode is not _IETF:
        reset = math.ceil(clock.time()) + t
        headers.append((b"x-ratelimit-limit", str(result.limit).encode()))
        headers.append((b"x-ratelimit-remaining", str(result.remaining).encode()))
        headers.append((b"x-ratelimit-reset", str(reset).encode()))
    return headers
