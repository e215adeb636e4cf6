"""Client identity: peer address, trusted proxies, right-most untrusted hop, IPv6 prefixes."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sergas_guard.asgi import RateLimitMiddleware
from sergas_guard.errors import ConfigurationError
from sergas_guard.web.forwarding import MAX_ELEMENT, MAX_OBFUSCATED
from sergas_guard.web.identity import (
    MAX_HOPS,
    MAX_IDENTITY,
    PEER_KEY_CACHE,
    ClientAddressResolver,
    ProxyHeader,
    parse_forwarded,
    parse_x_forwarded_for,
)
from sergas_guard.web.keys import client_ip
from sergas_guard.web.request import AsgiRequestInfo, WsgiRequestInfo
from tests.web.conftest import serving


def headers(**values: str) -> Callable[[str], list[str]]:
    lines = {name.replace("_", "-"): [value] for name, value in values.items()}
    return lambda name: lines.get(name, [])


def test_peer_is_the_client_without_trusted_proxies() -> None:
    resolver = ClientAddressResolver()
    spoof = headers(x_forwarded_for="1.1.1.1", forwarded="for=2.2.2.2")
    assert resolver.resolve("203.0.113.9", spoof) == "203.0.113.9"


def test_right_most_untrusted_hop_behind_trusted_proxies() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    # The client forged "6.6.6.6"; the edge proxy appended the real peer 198.51.100.4,
    # and an inner proxy 10.0.0.2 appended the edge proxy's address.
    chain = headers(x_forwarded_for="6.6.6.6, 198.51.100.4, 10.0.0.2")
    assert resolver.resolve("10.0.0.3", chain) == "198.51.100.4"


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    forged = headers(x_forwarded_for="10.0.0.9, 1.2.3.4")
    assert resolver.resolve("192.0.2.50", forged) == "192.0.2.50"


def test_all_hops_trusted_gives_the_left_most() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    chain = headers(x_forwarded_for="10.1.1.1, 10.2.2.2")
    assert resolver.resolve("10.0.0.3", chain) == "10.1.1.1"


def test_unknown_hop_stops_at_the_proxy_that_wrote_it() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    chain = headers(x_forwarded_for="1.2.3.4, unknown")
    assert resolver.resolve("10.0.0.3", chain) == "10.0.0.3"


def test_forwarded_header_rfc7239() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"], proxy_header="forwarded")
    value = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2;by=10.0.0.3'
    assert resolver.resolve("10.0.0.3", headers(forwarded=value)) == "2001:db8:cafe::/64"
    # X-Forwarded-For is not the configured header: a forged one changes nothing.
    forged = headers(forwarded="for=10.0.0.2", x_forwarded_for="9.9.9.9")
    assert resolver.resolve("10.0.0.3", forged) == "10.0.0.2"


def test_forwarded_obfuscated_identifier_is_an_identity() -> None:
    resolver = ClientAddressResolver(["127.0.0.1/32"], proxy_header="forwarded")
    assert resolver.resolve("127.0.0.1", headers(forwarded="for=_gazonk")) == "_gazonk"


def test_parsers_handle_ports_brackets_quotes_and_several_lines() -> None:
    assert parse_x_forwarded_for(["1.2.3.4:80, [::1]:443", " 2001:db8::1 "]) == [
        ipaddress.ip_address("1.2.3.4"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("2001:db8::1"),
    ]
    assert parse_forwarded(['for="1.2.3.4";proto="a,b", by=x', "for=unknown"]) == [
        ipaddress.ip_address("1.2.3.4"),
        None,
        None,
    ]
    assert parse_x_forwarded_for(["::ffff:192.0.2.1"]) == [ipaddress.ip_address("192.0.2.1")]


def test_ipv6_grouping_by_prefix() -> None:
    default = ClientAddressResolver()
    no_headers = headers()
    assert default.resolve("2001:db8:1:2:aaaa::1", no_headers) == "2001:db8:1:2::/64"
    assert default.resolve("2001:db8:1:2:bbbb::9", no_headers) == "2001:db8:1:2::/64"
    wide = ClientAddressResolver(ipv6_prefix=48)
    assert wide.resolve("2001:db8:1:2::1", no_headers) == "2001:db8:1::/48"
    exact = ClientAddressResolver(ipv6_prefix=128)
    assert exact.resolve("2001:db8::1", no_headers) == "2001:db8::1"
    assert default.resolve(None, no_headers) == "unknown"
    assert default.resolve("testclient", no_headers) == "testclient"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies"),
        ({"trusted_proxies": ["not a network"]}, "trusted_proxies"),
        ({"proxy_header": "x-real-ip"}, "proxy_header"),
        ({"ipv6_prefix": 0}, "ipv6_prefix"),
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ClientAddressResolver(**options)
    assert raised.value.field == field


untrusted_ipv4 = st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8"))
any_hop = st.one_of(
    st.ip_addresses().map(str), st.text(alphabet='0123456789abcdef:._[]" ,;=', max_size=20)
)


@given(peer=untrusted_ipv4, forged=st.lists(any_hop, max_size=6))
def test_spoofed_headers_from_untrusted_peers_change_nothing(
    peer: ipaddress.IPv4Address, forged: list[str]
) -> None:
    header: ProxyHeader
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver(["10.0.0.0/8"], proxy_header=header)
        value = (
            ", ".join(forged)
            if header == "x-forwarded-for"
            else ", ".join(f"for={hop}" for hop in forged)
        )
        both = headers(x_forwarded_for=value, forwarded=value)
        assert resolver.resolve(str(peer), both) == str(peer)


@given(
    client=untrusted_ipv4,
    forged=st.lists(st.ip_addresses(v=4).map(str), max_size=4),
    proxies=st.lists(st.ip_addresses(network="10.0.0.0/8").map(str), min_size=1, max_size=4),
)
def test_a_client_behind_trusted_proxies_cannot_choose_its_identity(
    client: ipaddress.IPv4Address, forged: list[str], proxies: list[str]
) -> None:
    # Whatever the client writes to the left, each trusted proxy appends its peer.
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    chain = [*forged, str(client), *proxies[:-1]]
    lines = {"x-forwarded-for": [", ".join(chain)]}
    assert resolver.resolve(proxies[-1], lambda name: lines.get(name, [])) == str(client)


@given(
    peer=st.one_of(st.ip_addresses().map(str), st.just("testclient"), st.none()),
    proxies=st.sampled_from([(), ("10.0.0.0/8",)]),
)
def test_cached_client_key_is_the_client_ip_key(peer: str | None, proxies: tuple[str, ...]) -> None:
    # The engine's default key goes through the per-peer cache; it must say exactly what
    # the client_ip key function says, asked twice (the second answer from the cache).
    resolver = ClientAddressResolver(proxies)
    scope: dict[str, Any] = {"type": "http", "path": "/"}
    scope["headers"] = [(b"x-forwarded-for", b"1.2.3.4")]
    scope["client"] = (peer, 1234) if peer is not None else None
    for _ in range(2):
        request = AsgiRequestInfo(scope, resolver)
        assert resolver.client_key(request) == client_ip(request)


def test_peer_key_cache_stays_bounded() -> None:
    resolver = ClientAddressResolver()
    for n in range(PEER_KEY_CACHE + 10):
        peer = str(ipaddress.IPv4Address(n + 1))
        request = AsgiRequestInfo({"type": "http", "path": "/", "client": (peer, 1)}, resolver)
        assert resolver.client_key(request) == "ip:" + peer
    assert len(resolver._peer_keys) <= PEER_KEY_CACHE


# --- issue 12: the client's text left of the proxies' entries (findings 4 and 11) ---

TRUSTED = "10.0.0.0/8"
REAL_CLIENT = "198.51.100.7"

# Header syntax a client may throw at the parser: quotes, escapes, separators, brackets.
header_syntax = st.text(alphabet='"\\,;= \t_x[]:.019afor', max_size=60)
client_prefix = st.one_of(
    header_syntax,
    st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=60),
    # huge: a short unit repeated (an open quote, a backslash, a long identifier...)
    st.builds(lambda unit, times: unit * times, header_syntax.filter(bool), st.integers(1, 3000)),
)
untrusted_client = st.ip_addresses().filter(
    lambda a: not (a.version == 4 and a in ipaddress.ip_network(TRUSTED))
)
proxy_chain = st.lists(st.ip_addresses(network=TRUSTED).map(str), min_size=1, max_size=4)


def forwarded_node(address: str) -> str:
    """How a proxy writes one hop into Forwarded (IPv6 quoted and bracketed, RFC 7239)."""
    if ":" in address:
        return f'for="[{address}]:4711";proto=https'
    return f"for={address};proto=https"


def proxied_lines(header: ProxyHeader, prefix: str, hops: list[str], new_line: bool) -> list[str]:
    """The header lines after each proxy appended the address it received the request
    from, to the client's line (nginx) or as a line of its own (HAProxy)."""
    entries = [forwarded_node(hop) if header == "forwarded" else hop for hop in hops]
    appended = ", ".join(entries)
    if new_line:
        return [prefix, appended] if prefix else [appended]
    return [f"{prefix}, {appended}" if prefix else appended]


def resolve_lines(resolver: ClientAddressResolver, peer: str, lines: list[str]) -> str:
    return resolver.resolve(peer, lambda name: lines if name == resolver.proxy_header else [])


def test_an_unclosed_quote_cannot_give_a_fresh_identity_per_request() -> None:
    # Finding 4: the open quote swallowed the proxy's entry, and "_x<N>, for=..." became
    # the identity, a new one per request.
    resolver = ClientAddressResolver(["127.0.0.1/32"], proxy_header="forwarded")
    for n in range(20):
        for new_line in (False, True):
            lines = proxied_lines("forwarded", f'for="_x{n}', [REAL_CLIENT], new_line)
            assert resolve_lines(resolver, "127.0.0.1", lines) == REAL_CLIENT


@given(
    prefix=client_prefix,
    client=untrusted_client,
    proxies=proxy_chain,
    new_line=st.booleans(),
)
def test_text_left_of_the_proxies_entries_never_changes_the_identity(
    prefix: str,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    proxies: list[str],
    new_line: bool,
) -> None:
    # Each trusted proxy appends the address it received the request from: the client's
    # real one first, then each proxy's but the last (the peer). Whatever the client
    # wrote before that, the identity is what it would be with no text at all.
    header: ProxyHeader
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver([TRUSTED], proxy_header=header)
        hops = [str(client), *proxies[:-1]]
        expected = resolve_lines(resolver, proxies[-1], proxied_lines(header, "", hops, False))
        lines = proxied_lines(header, prefix, hops, new_line)
        assert resolve_lines(resolver, proxies[-1], lines) == expected
        assert expected == resolver.resolve(str(client), headers())  # the client's network


@given(prefix=client_prefix, peer=st.sampled_from(["10.0.0.1", "127.0.0.1"]))
def test_identities_are_bounded_whatever_the_header(prefix: str, peer: str) -> None:
    # Even a host we trust, writing the whole header itself, gets an address, a network
    # or an RFC 7239 obfuscated identifier: never its text, never longer than the bound.
    header: ProxyHeader
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver(["0.0.0.0/0", "::/0"], proxy_header=header)
        identity = resolve_lines(resolver, peer, [prefix])
        assert len(identity) <= MAX_IDENTITY
        if not identity.startswith("_"):
            ipaddress.ip_network(identity)  # an address or a network
        else:
            assert re.fullmatch(r"_[A-Za-z0-9._-]+", identity)


@given(prefix=client_prefix, client=untrusted_client, proxies=proxy_chain)
def test_asgi_lines_and_wsgi_folded_lines_resolve_alike(
    prefix: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: list[str]
) -> None:
    # ASGI keeps repeated lines apart; WSGI servers (and so Django) fold them into one
    # value, with ", " (werkzeug) or "," (wsgiref). Every edge must agree.
    header: ProxyHeader
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver([TRUSTED], proxy_header=header)
        lines = proxied_lines(header, prefix, [str(client), *proxies[:-1]], new_line=True)
        name = header.encode()
        scope = {
            "type": "http",
            "path": "/",
            "client": (proxies[-1], 1),
            "headers": [(name, line.encode("latin-1")) for line in lines],
        }
        asgi = AsgiRequestInfo(scope, resolver).client_ip
        for fold in (", ", ","):
            environ = {
                "REMOTE_ADDR": proxies[-1],
                "HTTP_" + header.upper().replace("-", "_"): fold.join(lines),
            }
            assert WsgiRequestInfo(environ, resolver).client_ip == asgi


class WatchedText(str):
    """A header value that records the lowest index the parser asked to look at."""

    lowest: int

    def __new__(cls, text: str) -> WatchedText:
        watched = super().__new__(cls, text)
        watched.lowest = len(text)
        return watched

    def _saw(self, start: int | None) -> None:
        self.lowest = min(self.lowest, 0 if start is None else max(start, 0))

    def rfind(self, sub: str, start: Any = None, end: Any = None) -> int:
        self._saw(start)
        return super().rfind(sub, start, end)

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:
        self._saw(start)
        return super().find(sub, start, end)

    def __getitem__(self, index: Any) -> str:
        self._saw(index.start if isinstance(index, slice) else index)
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[str]:  # a character loop reads the whole text
        self._saw(0)
        return super().__iter__()

    def __contains__(self, sub: object) -> bool:
        self._saw(0)
        return super().__contains__(sub)  # type: ignore[operator]

    def __getattribute__(self, name: str) -> Any:
        allowed = {"rfind", "find", "__getitem__", "__len__", "_saw", "lowest", "__class__"}
        if name not in allowed:  # any other method may read the whole text
            object.__setattr__(self, "lowest", 0)
        return super().__getattribute__(name)


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
@pytest.mark.parametrize("unit", ["6.6.6.6, ", 'for="_x, ', "\\", '"', "a" * 40])
def test_parse_work_stops_where_the_walk_stops(header: ProxyHeader, unit: str) -> None:
    # Finding 11: 13 KB of hops cost 280x one hop. Reading stops at the first untrusted
    # hop: the client's text is never looked at beyond one element's bound.
    resolver = ClientAddressResolver([TRUSTED], proxy_header=header)
    prefix = unit * (100_000 // len(unit))
    (line,) = proxied_lines(header, prefix, [REAL_CLIENT, "10.0.0.2"], new_line=False)
    watched = WatchedText(line)
    assert resolver.resolve("10.0.0.3", lambda name: [watched]) == REAL_CLIENT
    assert watched.lowest >= len(prefix) - MAX_ELEMENT


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_a_trusted_host_sending_endless_trusted_hops_costs_at_most_max_hops(
    header: ProxyHeader,
) -> None:
    resolver = ClientAddressResolver([TRUSTED], proxy_header=header)
    hops = [f"10.0.{n // 250}.{n % 250 + 1}" for n in range(5000)]
    (line,) = proxied_lines(header, "", hops, new_line=False)
    watched = WatchedText(line)
    identity = resolver.resolve("10.0.0.1", lambda name: [watched])
    assert identity == hops[-MAX_HOPS]  # the last hop walked, a trusted address
    assert watched.lowest >= len(line) - (MAX_HOPS + 1) * MAX_ELEMENT


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("for=_gazonk", "_gazonk"),
        ('for="_gazonk:_port"', "_gazonk"),
        ("for=_gazonk:8080", "_gazonk"),
        ("for=_a.b-c_D9", "_a.b-c_D9"),
        ("for=_" + "x" * (MAX_OBFUSCATED - 1), "_" + "x" * (MAX_OBFUSCATED - 1)),
        # not the RFC's grammar, or too long: unreadable, so the walk stops at the proxy
        ("for=_", "127.0.0.1"),
        ('for="_a b"', "127.0.0.1"),
        ('for="_a\\"b"', "127.0.0.1"),
        ("for=_a:port", "127.0.0.1"),
        ("for=_" + "x" * MAX_OBFUSCATED, "127.0.0.1"),
        ("for=_a;for=_b", "127.0.0.1"),  # a parameter twice in one element
        ("for=unknown", "127.0.0.1"),
        ("proto=https", "127.0.0.1"),
    ],
)
def test_obfuscated_identifiers_only_per_the_rfc_grammar(node: str, expected: str) -> None:
    resolver = ClientAddressResolver(["127.0.0.1/32"], proxy_header="forwarded")
    assert resolver.resolve("127.0.0.1", headers(forwarded=node)) == expected


def test_an_unreadable_hop_stops_the_walk_at_the_trusted_host_that_wrote_it() -> None:
    resolver = ClientAddressResolver([TRUSTED])
    # A trusted proxy that did not know its peer: the identity is that proxy's address,
    # never the text left of "unknown".
    for chain in ("1.2.3.4, unknown", "1.2.3.4, garbage", "1.2.3.4, , 10.0.0.2"):
        assert resolver.resolve("10.0.0.3", headers(x_forwarded_for=chain)) in (
            "10.0.0.3",
            "10.0.0.2",
        )
    # A host inside the trusted network writing nonsense itself is identified by its
    # own address (the last hop vouched for), whatever it wrote.
    assert resolver.resolve("10.0.0.3", headers(x_forwarded_for='"x, 10.0.0.9')) == "10.0.0.9"
    assert resolver.resolve("10.0.0.3", headers(x_forwarded_for="x" * 10_000)) == "10.0.0.3"


def test_zone_ids_and_ports_do_not_split_an_identity() -> None:
    resolver = ClientAddressResolver([TRUSTED], ipv6_prefix=128)
    for hop in ("fe80::1%eth0", "fe80::1%1", "[fe80::1%2]:443", "fe80::1"):
        assert resolver.resolve("10.0.0.3", headers(x_forwarded_for=hop)) == "fe80::1"
    for hop in ("1.2.3.4:1", "1.2.3.4:65535", '"1.2.3.4"'):
        assert resolver.resolve("10.0.0.3", headers(x_forwarded_for=hop)) == "1.2.3.4"


def test_peer_text_that_is_no_address_is_clipped() -> None:
    assert len(ClientAddressResolver().resolve("x" * 10_000, headers())) == MAX_IDENTITY


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def test_uvicorn_counts_every_unclosed_quote_against_the_real_client() -> None:
    # Finding 4 through a real server: a proxy on loopback appends the client's entry to
    # the client's own Forwarded line; twelve requests with a fresh open-quoted
    # identifier each get through a limit of five no more.
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/login", hello, methods=["POST"])]),
        "5/minute",
        trusted_proxies=["127.0.0.1/32"],
        proxy_header="forwarded",
    )
    with serving(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            statuses = []
            for n in range(12):
                forwarded = f'for="_x{n}, for={REAL_CLIENT}'
                response = await http.post("/login", headers={"Forwarded": forwarded})
                statuses.append(response.status_code)
            other = await http.post("/login", headers={"Forwarded": "for=192.0.2.1"})
    assert statuses == [200] * 5 + [429] * 7
    assert other.status_code == 200  # another client keeps its own budget
