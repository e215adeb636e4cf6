"""Client identity: peer address, trusted proxies, right-most untrusted hop, IPv6 prefixes."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sergas_guard.errors import ConfigurationError
from sergas_guard.web.identity import (
    PEER_KEY_CACHE,
    ClientAddressResolver,
    ProxyHeader,
    parse_forwarded,
    parse_x_forwarded_for,
)
from sergas_guard.web.keys import client_ip
from sergas_guard.web.request import AsgiRequestInfo


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
