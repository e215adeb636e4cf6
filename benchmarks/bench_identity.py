"""Benchmark (not a test): what resolving the client's identity costs per request.

Behind a trusted proxy the forwarding header is partly the client's text. Resolving
must cost what the walk needs (the hops our proxies wrote), not what the client sent:
this times one hop against ~13 KB of client-written hops in front of it, for
``X-Forwarded-For`` and ``Forwarded``, through the ASGI request view as a request
pays it (fresh view per request, so no cached answer). Run from the repository root:

    python -m benchmarks.bench_identity [--number 2000]
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from sergas_guard.web.identity import ClientAddressResolver, ProxyHeader
from sergas_guard.web.request import AsgiRequestInfo

PROXY = "10.0.0.1"
CLIENT = "198.51.100.7"
#: The client's own text: 13 KB of forged hops, as in issue 12's finding 11.
FORGED_BYTES = 13 * 1024


def scope_for(header: ProxyHeader, client_text: str) -> dict[str, Any]:
    """A request from the trusted proxy, which appended the client's real address."""
    entry = CLIENT if header == "x-forwarded-for" else f"for={CLIENT}"
    value = f"{client_text}, {entry}" if client_text else entry
    return {
        "type": "http",
        "path": "/",
        "client": (PROXY, 40000),
        "headers": [(header.encode(), value.encode("latin-1"))],
    }


def per_request_us(resolver: ClientAddressResolver, scope: dict[str, Any], number: int) -> float:
    """Microseconds to build the request view and resolve its client address."""

    def once() -> str:
        return AsgiRequestInfo(scope, resolver).client_ip

    assert once() == CLIENT
    return min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    number = parser.parse_args().number
    header: ProxyHeader
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver([PROXY + "/32"], proxy_header=header)
        forged = "for=203.0.113.9" if header == "forwarded" else "203.0.113.9"
        client_text = ", ".join([forged] * (FORGED_BYTES // len(forged + ", ")))
        one = per_request_us(resolver, scope_for(header, ""), number)
        big = per_request_us(resolver, scope_for(header, client_text), max(number // 20, 10))
        print(
            f"{header:16} one hop {one:8.2f} us   {len(client_text) / 1024:5.1f} KB of "
            f"client hops {big:8.2f} us   ratio {big / one:7.1f}x"
        )


if __name__ == "__main__":
    main()
