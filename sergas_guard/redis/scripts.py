"""Lua scripts: registered once, loaded once per connection, run by their SHA-1.

A :class:`Script` knows its body, its SHA-1 and the RESP bytes that load it. Callers on a
hot path pre-encode whole ``EVALSHA`` calls (:meth:`Script.call`, or bytes of their own
with the same head); when the server answers ``NOSCRIPT`` (a ``SCRIPT FLUSH``, a restart,
a failover to a replica that never saw the script) the client resends the same call as
``EVAL`` (:meth:`Script.as_eval`), which runs the script and caches it again. That one
resend is safe: NOSCRIPT means the script did not run.
"""

from __future__ import annotations

import hashlib

from sergas_guard.redis.protocol import bulk, encode

__all__ = ["Script", "ScriptArg"]

#: What a script may be given as an argument (encoded as RESP bulk strings).
ScriptArg = bytes | str | int | float

_EVALSHA = bulk(b"EVALSHA")


class Script:
    """A Lua script (``body``) and its SHA-1, with its calls pre-encoded."""

    __slots__ = ("_eval_head", "_evalsha_head", "body", "load_command", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()
        self.load_command = encode(b"SCRIPT", b"LOAD", body.encode())
        self._evalsha_head = _EVALSHA + bulk(self.sha.encode())
        self._eval_head = bulk(b"EVAL") + bulk(body.encode())

    def __repr__(self) -> str:
        return f"Script(sha={self.sha[:12]}...)"

    @property
    def evalsha_head(self) -> bytes:
        """The encoded ``EVALSHA <sha>`` that every call of this script starts with
        (after the array header): for callers that pre-encode their calls."""
        return self._evalsha_head

    def call(
        self,
        keys: tuple[bytes | str, ...] | list[bytes | str],
        args: tuple[bytes | str | int | float, ...] | list[bytes | str | int | float],
    ) -> bytes:
        """The RESP bytes of ``EVALSHA sha len(keys) *keys *args``."""
        return encode(b"EVALSHA", self.sha, len(keys), *keys, *args)

    def as_eval(self, call: bytes) -> bytes:
        """The ``EVAL`` twin of an encoded ``EVALSHA`` call of this script.

        Raises ValueError when ``call`` is not an EVALSHA of this script.
        """
        header_end = call.index(b"\r\n") + 2
        head = self._evalsha_head
        if call[header_end : header_end + len(head)] != head:
            raise ValueError(f"not an EVALSHA call of {self!r}")
        return call[:header_end] + self._eval_head + call[header_end + len(head) :]
