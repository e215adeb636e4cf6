"""Who is the client? The peer address, or what trusted proxies say it was.

A proxy appends the address it received a request from to ``X-Forwarded-For`` (or a
``for=`` element to RFC 7239 ``Forwarded``). Everything left of what our own proxies
wrote is whatever the client chose to send, so the header is read from the right:
starting at the peer, each hop is believed only while the address that vouches for it
is a trusted proxy, and the first address that is not one is the client. A peer that
is not a trusted proxy is the client itself, whatever headers it sends.

IPv6 clients are grouped by prefix (default /64, what one subscriber usually gets), so
that rotating through the addresses of one network does not multiply the budget.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from sergas_guard.errors import ConfigurationError
from sergas_guard.validation import whole

__all__ = ["ClientAddressResolver", "ProxyHeader", "parse_forwarded", "parse_x_forwarded_for"]

ProxyHeader = Literal["x-forwarded-for", "forwarded"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Peers whose ``ip:`` key is remembered (see ClientAddressResolver.client_key).
PEER_KEY_CACHE = 4096


class _Request(Protocol):
    @property
    def peer(self) -> str | None: ...
    @property
    def client_ip(self) -> str: ...


# A hop is an address, an RFC 7239 obfuscated identifier (``_hidden``), or None (unknown).
Hop = IPAddress | str | None


def _parse_address(text: str) -> Hop:
    """One hop as written by a proxy: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"').strip()
    if not text or text.lower() == "unknown":
        return None
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        # RFC 7239 obfuscated identifiers are stable per client: usable as an identity.
        return text if text.startswith("_") else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_x_forwarded_for(values: Iterable[str]) -> list[Hop]:
    """The hops of one or more ``X-Forwarded-For`` lines, client first."""
    return [_parse_address(part) for value in values for part in value.split(",")]


def parse_forwarded(values: Iterable[str]) -> list[Hop]:
    """The ``for=`` hops of one or more RFC 7239 ``Forwarded`` lines, client first.

    An element without ``for=`` counts as an unknown hop, so positions stay aligned.
    """
    hops: list[Hop] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            hop: Hop = None
            for pair in _split_outside_quotes(element, ";"):
                name, _, token = pair.partition("=")
                if name.strip().lower() == "for":
                    hop = _parse_address(token)
            hops.append(hop)
    return hops


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


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
        self._parse_hops = parse_forwarded if proxy_header == "forwarded" else parse_x_forwarded_for
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix
        self._group = functools.lru_cache(maxsize=4096)(self._group_uncached)
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
        Unix socket); ``header_values(name)`` returns a request header's lines.
        """
        if peer is None:
            return "unknown"
        if not self.trusted:
            return self._group(peer)
        current = _parse_address(peer)
        if not self._is_trusted(current):
            return self._group(peer)
        values = header_values(self.proxy_header)
        for hop in reversed(self._parse_hops(values)):
            if hop is None:
                break  # a proxy of ours did not know its peer: stop at that proxy
            if isinstance(hop, str):
                return hop
            current = hop
            if not self._is_trusted(hop):
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

    def _is_trusted(self, address: Hop) -> bool:
        if address is None or isinstance(address, str):
            return False
        return any(address in network for network in self.trusted)

    def _group_uncached(self, text: str) -> str:
        address = _parse_address(text)
        if address is None or isinstance(address, str):
            return text  # not an IP (a test client's name, a socket path): use as is
        if isinstance(address, ipaddress.IPv6Address):
            if self.ipv6_prefix == 128:
                return str(address)
            return str(ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False))
        if self.ipv4_prefix == 32:
            return str(address)
        return str(ipaddress.IPv4Network((address, self.ipv4_prefix), strict=False))
