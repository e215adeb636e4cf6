"""Who is the client? The peer address, or what trusted proxies say it was.

A proxy appends the address it received a request from to ``X-Forwarded-For`` (or a
``for=`` element to RFC 7239 ``Forwarded``). Everything left of what our own proxies
wrote is whatever the client chose to send, so the header is read from the right
(:mod:`sergas_guard.web.forwarding`): starting at the peer, each hop is believed only
while the address that vouches for it is a trusted proxy, and the first address that
is not one is the client. A peer that is not a trusted proxy is the client itself,
whatever headers it sends. Reading stops where the walk stops, so the client's text
costs nothing and cannot change the answer.

IPv6 clients are grouped by prefix (default /64, what one subscriber usually gets), so
that rotating through the addresses of one network does not multiply the budget.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Literal, Protocol

from sergas_guard.errors import ConfigurationError
from sergas_guard.validation import whole
from sergas_guard.web.forwarding import (
    Hop,
    forwarded_nodes,
    parse_forwarded,
    parse_node,
    parse_x_forwarded_for,
    x_forwarded_for_nodes,
)

__all__ = [
    "MAX_HOPS",
    "MAX_IDENTITY",
    "ClientAddressResolver",
    "ProxyHeader",
    "parse_forwarded",
    "parse_x_forwarded_for",
]

ProxyHeader = Literal["x-forwarded-for", "forwarded"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Peers whose ``ip:`` key is remembered (see ClientAddressResolver.client_key).
PEER_KEY_CACHE = 4096
#: The most hops walked: real chains of proxies are a handful deep, and the walk only
#: goes on through trusted ones, so the bound only ever cuts text a trusted host wrote.
MAX_HOPS = 16
#: The longest identity: an address or network is at most 43 characters, an obfuscated
#: identifier at most 64; a peer that is no address (a test client's name) is clipped.
MAX_IDENTITY = 64


_UNREADABLE: tuple[Hop, bool] = (None, False)


class _Request(Protocol):
    @property
    def peer(self) -> str | None: ...
    @property
    def client_ip(self) -> str: ...


class ClientAddressResolver:
    """Turns a peer address and proxy headers into the client's (grouped) address.

    ``trusted_proxies`` are CIDR networks (``"10.0.0.0/8"``, ``"::1/128"``) of proxies
    whose forwarding header is believed; empty (the default) means the peer address is
    the client and forwarding headers are ignored. ``proxy_header`` names the one header
    the proxies write: trusting both would let a client forge the one they do not set.
    ``ipv6_prefix`` and ``ipv4_prefix`` group addresses into networks.
    """

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        *,
        proxy_header: ProxyHeader = "x-forwarded-for",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        try:
            self.trusted: tuple[IPNetwork, ...] = tuple(
                ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies
            )
        except (TypeError, ValueError) as exc:  # TypeError: not a collection
            raise ConfigurationError(f"trusted_proxies: {exc}", field="trusted_proxies") from None
        if proxy_header not in ("x-forwarded-for", "forwarded"):
            raise ConfigurationError(
                f"proxy_header must be 'x-forwarded-for' or 'forwarded', not {proxy_header!r}",
                field="proxy_header",
            )
        whole(ipv6_prefix, "ipv6_prefix", minimum=1, maximum=128)
        whole(ipv4_prefix, "ipv4_prefix", minimum=1, maximum=32)
        self.proxy_header: ProxyHeader = proxy_header
        self._nodes_from_right: Callable[[str], Iterator[str | None]] = (
            forwarded_nodes if proxy_header == "forwarded" else x_forwarded_for_nodes
        )
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix
        self._group = functools.lru_cache(maxsize=4096)(self._group_uncached)
        # Parsing an address and testing it against the networks cost microseconds;
        # the same proxies and clients come back, so remember the answer per node text.
        self._read_node = functools.lru_cache(maxsize=4096)(self._read_node_uncached)
        self._peer_keys: dict[str | None, str] = {}

    def __repr__(self) -> str:
        networks = [str(net) for net in self.trusted]
        return (
            f"ClientAddressResolver(trusted_proxies={networks}, "
            f"proxy_header={self.proxy_header!r}, ipv6_prefix={self.ipv6_prefix})"
        )

    def resolve(self, peer: str | None, header_values: Callable[[str], list[str]]) -> str:
        """The client's address (or network, for grouped prefixes) as a string.

        ``peer`` is the address the connection came from (None when unknown, e.g. a
        Unix socket); ``header_values(name)`` returns a request header's lines. The
        walk from the right stops at the first untrusted address (the client), and
        at a hop it cannot read (``unknown``, malformed, too long) or after
        :data:`MAX_HOPS` hops: the identity is then the trusted address that wrote
        that hop, never text left of it. Never raises; at most MAX_IDENTITY characters.
        """
        if peer is None:
            return "unknown"
        if not self.trusted:
            return self._group(peer)
        current, trusted = self._read_node(peer)
        if not trusted:
            return self._group(peer)
        values = header_values(self.proxy_header)
        if not values:
            return self._group(peer)
        # Repeated lines read as one comma-joined value, as WSGI servers fold them, so
        # the ASGI, WSGI and Django edges agree.
        text = values[0] if len(values) == 1 else ", ".join(values)
        for node in islice(self._nodes_from_right(text), MAX_HOPS):
            hop, trusted = self._read_node(node) if node else _UNREADABLE
            if hop is None:
                break  # who wrote it did not know, or wrote nonsense: stop at the writer
            if isinstance(hop, str):
                return hop  # an obfuscated identifier, at most MAX_OBFUSCATED long
            current = hop
            if not trusted:
                break
        return self._group(str(current))

    def client_key(self, request: _Request) -> str:
        """``ip:<client address>``, what :func:`sergas_guard.web.keys.client_ip` returns.

        Without trusted proxies the peer alone decides, so the key is remembered per
        peer (a bounded dict, emptied when full): one lookup per request.
        """
        if self.trusted:
            return "ip:" + request.client_ip
        peer = request.peer
        key = self._peer_keys.get(peer)
        if key is None:
            key = "ip:" + request.client_ip
            if len(self._peer_keys) >= PEER_KEY_CACHE:
                self._peer_keys.clear()
            self._peer_keys[peer] = key
        return key

    def _read_node_uncached(self, text: str) -> tuple[Hop, bool]:
        """The hop a node names, and whether it is one of our trusted proxies."""
        hop = parse_node(text)
        if hop is None or isinstance(hop, str):
            return hop, False
        return hop, any(hop in network for network in self.trusted)

    def _group_uncached(self, text: str) -> str:
        address = parse_node(text)
        if address is None or isinstance(address, str):
            # Not an IP (a test client's name, a socket path): use as is, within bounds.
            return text[:MAX_IDENTITY]
        if isinstance(address, ipaddress.IPv6Address):
            if self.ipv6_prefix == 128:
                return str(address)
            return str(ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False))
        if self.ipv4_prefix == 32:
            return str(address)
        return str(ipaddress.IPv4Network((address, self.ipv4_prefix), strict=False))
