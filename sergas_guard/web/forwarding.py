"""Forwarding headers read from the right: ``X-Forwarded-For`` and RFC 7239 ``Forwarded``.

Only the right end of a forwarding header was written by our proxies; everything left
of it is whatever the client sent. So hops are produced right to left, one list
element at a time, and the caller stops pulling where its walk stops: text left of
that is never scanned. Each element is looked for within :data:`MAX_ELEMENT`
characters, so one hop costs a bounded amount of work whatever the client wrote, and
an element the client left unterminated (an open quote, a stray backslash) cannot
swallow or shift the proxies' elements, which are read before it.

The readers yield each element's node text (None for an element without one, or one
that cannot be delimited); :func:`parse_node` turns a node into a hop: an address, an
RFC 7239 obfuscated identifier (``_hidden``, only as the RFC's grammar spells it and at
most :data:`MAX_OBFUSCATED` characters), or None for ``unknown`` and anything else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_ELEMENT",
    "MAX_OBFUSCATED",
    "Hop",
    "IPAddress",
    "forwarded_nodes",
    "parse_forwarded",
    "parse_node",
    "parse_x_forwarded_for",
    "x_forwarded_for_nodes",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Hop = IPAddress | str | None

#: The longest list element read, in characters. A Forwarded element carries ``for``,
#: ``by``, ``proto`` and ``host`` (a host name is at most 253); anything longer is
#: not something a proxy wrote, and reading it would cost whatever the client chose.
MAX_ELEMENT = 512
#: The longest obfuscated identifier (``_`` included) taken as an identity.
MAX_OBFUSCATED = 64

# obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-" ); node-port = port / obfport
_OBFUSCATED_TEXT = rf"_[A-Za-z0-9._-]{{1,{MAX_OBFUSCATED - 1}}}"
_OBFUSCATED = re.compile(_OBFUSCATED_TEXT)
_PORT = re.compile(rf"[0-9]{{1,5}}|{_OBFUSCATED_TEXT}")
_OWS = " \t"
# forwarded-pair = token "=" value; value = token / quoted-string. Unquoted values are
# read leniently (proxies write ``for=2001:db8::1`` though the RFC wants quotes); the
# alternatives of the quoted string are disjoint, so matching is linear.
_PAIR = re.compile(
    r'[ \t]*([^=;,"\s]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;,"\s]+)[ \t]*(?:;|\Z)', re.DOTALL
)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def parse_node(text: str) -> Hop:
    """One node as a proxy writes it: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``,
    ``_hidden``, ``_hidden:_port``; None for ``unknown`` or anything else.

    Ports and IPv6 zone ids are dropped (they change per connection or per host, not
    per client); IPv4-mapped IPv6 addresses become IPv4. Never raises.
    """
    if text.startswith("_"):
        node, _, port = text.partition(":")
        if _OBFUSCATED.fullmatch(node) and (not port or _PORT.fullmatch(port)):
            return node
        return None
    if text.startswith("["):
        close = text.find("]")
        port = text[close + 1 :]
        if close < 0 or (port and not (port[0] == ":" and _PORT.fullmatch(port, 1))):
            return None
        host = text[1:close]
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not _PORT.fullmatch(port):
            return None
    else:
        host = text
    host = host.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # "unknown", a name, or text no proxy writes
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def x_forwarded_for_nodes(text: str) -> Iterator[str | None]:
    """The nodes of an ``X-Forwarded-For`` value, right-most first, read lazily.

    An element longer than :data:`MAX_ELEMENT` yields None and ends the hops.
    """
    end = len(text)
    while True:
        low = max(end - MAX_ELEMENT, 0)
        comma = text.rfind(",", low, end)
        if comma < 0 and low > 0:
            yield None
            return
        element = text[comma + 1 : end].strip(_OWS)
        if len(element) > 1 and element[0] == element[-1] == '"':
            element = element[1:-1]
        yield element
        if comma < 0:
            return
        end = comma


def forwarded_nodes(text: str) -> Iterator[str | None]:
    """The ``for=`` nodes of a ``Forwarded`` value, right-most first, read lazily.

    An element without exactly one readable ``for=`` yields None; one that cannot be
    delimited within :data:`MAX_ELEMENT` characters (too long, or a quote left open)
    yields None and ends the hops.
    """
    end = len(text)
    while True:
        comma = _element_start(text, end)
        if comma is None:
            yield None
            return
        yield _for_node(text[comma + 1 : end])
        if comma < 0:
            return
        end = comma


def _element_start(text: str, end: int) -> int | None:
    """The comma left of the element ending at ``end`` (-1: the text's start); None when
    the element is not delimited within MAX_ELEMENT characters or a quote stays open."""
    low = max(end - MAX_ELEMENT, 0)
    comma = text.rfind(",", low, end)
    quote = text.rfind('"', max(comma, low), end)
    while quote >= 0:  # jump over quoted strings, right to left
        opening = text.rfind('"', low, quote)
        while opening >= 0 and _is_escaped(text, opening, low):
            opening = text.rfind('"', low, opening)
        if opening < 0:
            return None
        comma = text.rfind(",", low, opening)
        quote = text.rfind('"', max(comma, low), opening)
    if comma < 0 and low > 0:
        return None
    return comma


def _is_escaped(text: str, index: int, low: int) -> bool:
    """Whether the character at ``index`` follows an odd run of backslashes."""
    run = index
    while run > low and text[run - 1] == "\\":
        run -= 1
    return (index - run) % 2 == 1


def _for_node(element: str) -> str | None:
    """The node of an element's single ``for=`` pair; None if absent or malformed."""
    if not element.strip(_OWS):
        return None
    node: str | None = None
    seen_for = False
    position, length = 0, len(element)
    while position < length:
        pair = _PAIR.match(element, position)
        if pair is None:
            return None
        if pair[1].lower() == "for":
            if seen_for:  # RFC 7239: a parameter occurs at most once per element
                return None
            seen_for = True
            value = pair[2]
            if value.startswith('"'):
                value = _ESCAPED.sub(r"\1", value[1:-1])
            node = value
        position = pair.end()
    return node


def _joined(values: Iterable[str]) -> str:
    # What a WSGI server does with repeated lines, so every edge reads the same text.
    return ", ".join(values)


def parse_x_forwarded_for(values: Iterable[str]) -> list[Hop]:
    """The hops of one or more ``X-Forwarded-For`` lines, client first.

    Reading stops at an element longer than MAX_ELEMENT (the list then starts with None).
    """
    hops = [parse_node(node) if node else None for node in x_forwarded_for_nodes(_joined(values))]
    hops.reverse()
    return hops


def parse_forwarded(values: Iterable[str]) -> list[Hop]:
    """The ``for=`` hops of one or more RFC 7239 ``Forwarded`` lines, client first.

    An element without ``for=`` counts as an unknown hop (None), so positions stay
    aligned. Reading stops at an element that cannot be delimited (the list then
    starts with None).
    """
    hops = [parse_node(node) if node else None for node in forwarded_nodes(_joined(values))]
    hops.reverse()
    return hops
