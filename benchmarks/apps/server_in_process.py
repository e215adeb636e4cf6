"""The apps of web_apps.py behind uvicorn's own HTTP protocol, without sockets.

Each configuration gets uvicorn's protocol class (h11 or httptools, as ``--http``
picks) on an in-memory transport, and ``--connections`` keep-alive connections take
turns sending ``GET /``: uvicorn parses each request, runs the app in a task of its
own, writes the response and arms its keep-alive timer, exactly as under wrk. What is
missing is the kernel (sockets, the client's CPU), so the figure is the server's own
CPU per request in Python and the C it calls, and it moves by a few percent between
runs where wrk's moved by 20-30 % on this shared machine. Its ratios to bare match
wrk's (docs/web.md, "Performance"). Configurations take turns round by round and keep
their best round.

    .venv/bin/python benchmarks/apps/server_in_process.py [--http h11] [bare_starlette ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent))
# As uvicorn --app-dir imports it: this directory is not a package.
web_apps: Any = importlib.import_module("web_apps")

DEFAULT = (
    "bare_starlette",
    "static_headers",
    "dict_counter",
    "ours_memory",
    "ours_memory_no_headers",
)
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
ADDRESSES = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}


class MemoryTransport(asyncio.Transport):
    """Takes what the protocol writes; ``written`` resolves at the first write after it
    was armed, when the response (one write with h11 and httptools alike) went out."""

    def __init__(self) -> None:
        super().__init__()
        self.written: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ADDRESSES.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _serve(factory: str, http: str, connections: int, requests: int) -> float:
    """CPU µs per request of ``requests`` requests over ``connections`` connections."""
    config = Config(app=getattr(web_apps, factory)(), http=http, lifespan="off", access_log=False)
    config.load()
    loop = asyncio.get_running_loop()
    state = ServerState()
    served: list[tuple[asyncio.Protocol, MemoryTransport]] = []
    for _ in range(connections):
        transport = MemoryTransport()
        protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state={}, _loop=loop
        )
        protocol.connection_made(transport)
        served.append((protocol, transport))

    async def one_each() -> None:
        waits = []
        for protocol, transport in served:
            transport.written = loop.create_future()
            protocol.data_received(REQUEST)
            waits.append(transport.written)
        await asyncio.gather(*waits)
        await asyncio.sleep(0)  # the responses' completion callbacks

    for _ in range(50):
        await one_each()
    rounds = max(1, requests // connections)
    started = time.process_time()
    for _ in range(rounds):
        await one_each()
    elapsed = time.process_time() - started
    for protocol, _ in served:
        protocol.connection_lost(None)
    return elapsed / (rounds * connections) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("factories", nargs="*", default=list(DEFAULT))
    parser.add_argument("--http", default="h11", choices=("h11", "httptools"))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=12_800, help="per round")
    options = parser.parse_args()
    best = dict.fromkeys(options.factories, float("inf"))
    for _ in range(options.rounds):
        for name in options.factories:
            cpu = await _serve(name, options.http, options.connections, options.requests)
            best[name] = min(best[name], cpu)
    baseline = best[options.factories[0]]
    print(f"uvicorn's {options.http} protocol, {options.connections} connections, in process:")
    for name, cpu in best.items():
        print(f"{name:32} {cpu:7.2f} µs/request  {baseline / cpu:5.3f}x  (+{cpu - baseline:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
