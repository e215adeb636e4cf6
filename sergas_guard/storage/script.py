"""Compatibility path: ``sergas_guard.storage.script`` is now
:mod:`sergas_guard.ratelimit.stores.script` (the stores sit beside the strategies)."""

from sergas_guard.ratelimit.stores.script import (
    DECIDE,
    DECIDE_SCRIPT,
    DECIDE_SHA,
    encode_call,
    parse_reply,
    script_args,
    spec_arg,
)

__all__ = [
    "DECIDE",
    "DECIDE_SCRIPT",
    "DECIDE_SHA",
    "encode_call",
    "parse_reply",
    "script_args",
    "spec_arg",
]
