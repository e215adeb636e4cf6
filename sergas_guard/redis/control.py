"""One-off exchanges with a Redis node or Sentinel: connect, send a few commands in one
write, read their replies, close.

This is the control plane (which node is the master, what role a node plays): asked once
per (re)connect, never per decision, so a fresh socket each time is cheap enough and
leaves nothing to keep healthy. The hot path is the multiplexed connections' job.

A whole exchange (connect, TLS handshake, AUTH, the commands and every reply) is bounded
by one timeout (``timeout=`` of the sync face, ``asyncio.timeout`` around the async one):
a Sentinel that accepts connections but never answers costs that much, however many
commands were sent. Replies are RESP2 values: ``str`` (simple and bulk
strings, decoded: control-plane replies are addresses and role names), ``int``, ``None``
(a null bulk or array), ``list`` and :class:`ErrorReply` (an error the peer answered, as
a value). Failures to talk at all raise ``OSError`` (refused, reset, timed out,
``ssl.SSLError``) or :class:`ProtocolError` (the peer does not speak RESP).
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import time
from collections.abc import Iterator, Sequence
from typing import Final

from sergas_guard.redis.address import TcpAddress

__all__ = [
    "MAX_REPLY_BYTES",
    "ErrorReply",
    "ProtocolError",
    "Reply",
    "ReplyReader",
    "encode",
    "exchange",
    "exchange_sync",
]

#: The most bytes an exchange reads. Control-plane replies are a few hundred bytes; a
#: peer sending more is not the Redis or Sentinel we meant to ask (an HTTP server behind
#: the wrong port, say), and must not make us buffer without bound.
MAX_REPLY_BYTES: Final = 64 * 1024

_CHUNK = 16 * 1024


class ErrorReply:
    """An error reply (``-ERR ...``, ``-NOAUTH ...``): a value the caller inspects."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def code(self) -> str:
        """The first word: ``ERR``, ``NOAUTH``, ``WRONGPASS``..."""
        return self.text.split(" ", 1)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorReply) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"ErrorReply({self.text!r})"


class ProtocolError(Exception):
    """The peer's bytes are not RESP (or more than :data:`MAX_REPLY_BYTES` of it)."""


Reply = str | int | None | list["Reply"] | ErrorReply


def encode(*parts: str) -> bytes:
    """One command as a RESP array of bulk strings."""
    chunks = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        chunks.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(chunks)


class ReplyReader:
    """Parses RESP2 replies from bytes arriving in pieces: :meth:`feed` what the socket
    gave, then take the :meth:`replies` complete so far."""

    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def replies(self) -> Iterator[Reply]:
        """Each reply complete in what was fed and not yet taken; raises ProtocolError."""
        while (parsed := self._parse(self._position)) is not None:
            reply, self._position = parsed
            yield reply

    def _line(self, start: int) -> tuple[str, int] | None:
        end = self._buffer.find(b"\r\n", start)
        if end < 0:
            return None
        return self._buffer[start:end].decode("utf-8", "replace"), end + 2

    def _parse(self, start: int) -> tuple[Reply, int] | None:
        if start >= len(self._buffer):
            return None
        kind = self._buffer[start : start + 1]
        line = self._line(start + 1)
        if line is None:
            return None
        text, after = line
        if kind == b"+":
            return text, after
        if kind == b"-":
            return ErrorReply(text), after
        if kind == b":":
            return _integer(text), after
        if kind == b"$":
            length = _integer(text)
            if length < 0:
                return None, after
            if len(self._buffer) < after + length + 2:
                return None
            data = bytes(self._buffer[after : after + length])
            return data.decode("utf-8", "replace"), after + length + 2
        if kind == b"*":
            count = _integer(text)
            if count < 0:
                return None, after
            items: list[Reply] = []
            for _ in range(count):
                parsed = self._parse(after)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        raise ProtocolError(f"not a RESP reply: it starts with {bytes(kind)!r}")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"not a RESP number: {text[:20]!r}") from None


def exchange_sync(
    address: TcpAddress,
    commands: Sequence[Sequence[str]],
    *,
    timeout: float,
    ssl: ssl_module.SSLContext | None = None,
) -> list[Reply]:
    """Send ``commands`` to ``address`` in one write and return their replies in order.

    Blocks at most ``timeout`` seconds in all. Raises OSError (refused, reset, closed
    early, ``TimeoutError``, ``ssl.SSLError``) or ProtocolError.
    """
    deadline = time.monotonic() + timeout
    payload = b"".join(encode(*command) for command in commands)
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        if ssl is not None:
            sock.settimeout(_remaining(deadline))
            sock = ssl.wrap_socket(sock, server_hostname=address.host)
        sock.settimeout(_remaining(deadline))
        sock.sendall(payload)
        reader = ReplyReader()
        replies: list[Reply] = []
        received = 0
        while len(replies) < len(commands):
            sock.settimeout(_remaining(deadline))
            data = sock.recv(_CHUNK)
            received += _checked_size(data, received)
            reader.feed(data)
            replies.extend(reader.replies())
        return replies
    finally:
        sock.close()


async def exchange(
    address: TcpAddress,
    commands: Sequence[Sequence[str]],
    *,
    ssl: ssl_module.SSLContext | None = None,
) -> list[Reply]:
    """:func:`exchange_sync` on the running loop (never blocks it), same errors; the
    caller bounds it (``async with asyncio.timeout(...)``), which raises TimeoutError."""
    payload = b"".join(encode(*command) for command in commands)
    stream_reader, writer = await asyncio.open_connection(
        address.host, address.port, ssl=ssl, server_hostname=address.host if ssl else None
    )
    try:
        writer.write(payload)
        reader = ReplyReader()
        replies: list[Reply] = []
        received = 0
        while len(replies) < len(commands):
            data = await stream_reader.read(_CHUNK)
            received += _checked_size(data, received)
            reader.feed(data)
            replies.extend(reader.replies())
        return replies
    finally:
        # abort, not close: a graceful TLS close may wait on the peer, beyond any bound.
        writer.transport.abort()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _checked_size(data: bytes, received: int) -> int:
    if not data:
        raise ConnectionResetError("the peer closed the connection before answering")
    if received + len(data) > MAX_REPLY_BYTES:
        raise ProtocolError(f"the peer sent more than {MAX_REPLY_BYTES} bytes")
    return len(data)
