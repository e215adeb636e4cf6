"""RESP2 on the wire: encoding commands, and reading replies as they arrive in pieces.

Commands are encoded once into bytes (:func:`encode`); callers with a hot path keep the
constant parts of their commands pre-encoded and send those bytes as they are.

Replies are read by an incremental reader: ``feed(data)`` with whatever the socket gave,
then ``gets()`` until it returns ``False`` (no complete reply yet). Replies are ``bytes``
(simple and bulk strings), ``int``, ``None`` (null bulk / array), ``list`` (arrays) and
:class:`ErrorReply` (an error the server answered: a value, not raised). The reader is
hiredis's C parser when the ``hiredis`` package imports, else :class:`PythonReader`,
which gives the very same values (a property test holds them together).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "ErrorReply",
    "ProtocolError",
    "PythonReader",
    "Reader",
    "Reply",
    "bulk",
    "encode",
    "make_reader",
]


class ErrorReply(Exception):
    """An error reply of the server (``-ERR ...``), as a value: ``str(reply)`` is its text.

    An Exception subclass because hiredis builds one per error reply from the class it is
    given; the client turns it into a StorageError where a caller sees it.
    """

    @property
    def code(self) -> str:
        """The first word: ``ERR``, ``NOSCRIPT``, ``READONLY``, ``MOVED``..."""
        return str(self).split(" ", 1)[0]


class ProtocolError(Exception):
    """The byte stream is not RESP: the connection can no longer be trusted."""


Reply = bytes | int | None | list["Reply"] | ErrorReply


class Reader(Protocol):
    def feed(self, data: bytes, /) -> None: ...

    def gets(self) -> object: ...


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode(*parts: bytes | str | int | float) -> bytes:
    """One command as RESP bytes: an array of bulk strings (str as UTF-8, numbers in
    decimal). Raises TypeError for any other type of part."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, bytes):
            data = part
        elif isinstance(part, str):
            data = part.encode()
        elif isinstance(part, int | float) and not isinstance(part, bool):
            data = repr(part).encode()
        else:
            raise TypeError(
                f"a Redis command argument must be bytes, str or a number, not "
                f"{type(part).__name__}"
            )
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class PythonReader:
    """The pure-Python reader: hiredis's behaviour where hiredis is not installed.

    Keeps unread bytes in one buffer and a read position; a reply that is not complete
    yet is parsed again from its start when more data arrives (replies here are small).
    """

    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def feed(self, data: bytes, /) -> None:
        if self._position:
            # Drop what was read before growing the buffer: it never holds more than
            # the replies not yet complete.
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data

    def gets(self) -> object:
        """The next complete reply, or ``False`` when none is complete yet.
        Raises ProtocolError on bytes that are not RESP."""
        parsed = self._parse(self._position)
        if parsed is None:
            return False
        reply, self._position = parsed
        return reply

    def _line(self, start: int) -> tuple[bytes, int] | None:
        end = self._buffer.find(b"\r\n", start)
        if end < 0:
            return None
        return bytes(self._buffer[start:end]), end + 2

    def _parse(self, start: int) -> tuple[object, int] | None:
        buffer = self._buffer
        if start >= len(buffer):
            return None
        kind = buffer[start]
        line = self._line(start + 1)
        if line is None:
            return None
        text, after = line
        if kind == 43:  # "+" a simple string
            return text, after
        if kind == 45:  # "-" an error
            return ErrorReply(text.decode("utf-8", "replace")), after
        if kind == 58:  # ":" an integer
            return _integer(text), after
        if kind == 36:  # "$" a bulk string
            size = _integer(text)
            if size < 0:
                return None, after
            end = after + size
            if len(buffer) < end + 2:
                return None
            return bytes(buffer[after:end]), end + 2
        if kind == 42:  # "*" an array
            count = _integer(text)
            if count < 0:
                return None, after
            items: list[object] = []
            position = after
            for _ in range(count):
                parsed = self._parse(position)
                if parsed is None:
                    return None
                item, position = parsed
                items.append(item)
            return items, position
        raise ProtocolError(f"protocol error, got {chr(kind)!r} as reply type byte")


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"not an integer in a reply: {text[:40]!r}") from None


def make_reader() -> Reader:
    """A fresh reader: hiredis's when it is installed, else :class:`PythonReader`."""
    if _hiredis_reader is not None:
        reader: Reader = _hiredis_reader(protocolError=ProtocolError, replyError=ErrorReply)
        return reader
    return PythonReader()


_hiredis_reader: Any
try:
    from hiredis import Reader as _hiredis_reader
except ImportError:  # pragma: no cover - hiredis is a dependency, but optional at run time
    _hiredis_reader = None
