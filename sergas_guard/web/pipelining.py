"""Automatic pipelining of rate-limit scripts: one Redis round trip for many requests.

A web server decides many requests at once. Sent one by one through redis-py's
asyncio client, each decision pays a connection checkout, a timeout wrapper, a send
and a receive system call: about 100 µs of CPU in the server process, far more than
the script takes in Redis. :class:`PipelinedClient` collects the ``EVALSHA``/``EVAL``
calls issued during one turn of the event loop and sends them as one
non-transactional pipeline. Each script still runs atomically in Redis, in order;
only the transport is shared, and an error reaches exactly the calls it concerns.
Measured on the benchmark machine: ~107 µs → ~37 µs of CPU per decision at 32
concurrent requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sergas_guard.errors import ConfigurationError

__all__ = ["MAX_BATCH", "PipelinedClient", "pipelined_redis_storage"]

MAX_BATCH = 256

Pending = list[tuple[tuple[Any, ...], "asyncio.Future[Any]"]]


class PipelinedClient:
    """A ``redis.asyncio`` client stand-in whose script calls are pipelined together.

    ``connect`` returns the real client (called on first use, so the client is made
    in the event loop that uses it) and ``close`` closes it. Commands other than
    ``evalsha`` and ``eval`` go straight to the real client.
    """

    def __init__(self, connect: Callable[[], Any], close: Callable[[], Awaitable[None]]) -> None:
        self._connect = connect
        self._close = close
        self._client: Any = None
        self._pending: Pending = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> asyncio.Future[Any]:
        return self._enqueue(("EVALSHA", sha, numkeys, *keys_and_args))

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> asyncio.Future[Any]:
        return self._enqueue(("EVAL", script, numkeys, *keys_and_args))

    def _enqueue(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            # Flush after the callbacks already queued for this turn have run, so
            # every request woken in the same turn joins the batch.
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        self._scheduled = False
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.ensure_future(self._flush(batch))
            self._flushes.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: Pending) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # every caller in the batch learns of the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        self._client = None
        await self._close()


def pipelined_redis_storage(url: str, **options: Any) -> Any:
    """A RedisStorage for ``url`` whose async decisions are pipelined (see the module).

    ``options`` go to RedisStorage (timeouts, retries, ...). The sync face is the
    storage's own. Raises ConfigurationError for a cluster URL (a pipeline there would
    mix slots) or a URL that is not Redis.
    """
    from sergas_guard.storage.redis import RedisStorage

    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"pipelining needs a redis://, rediss:// or unix:// URL, not {scheme}://",
            field="storage",
        )
    # The plain storage builds the real client with its own options; the pipelined one
    # sends through it and closes it.
    direct = RedisStorage(url, **options)
    client = PipelinedClient(lambda: direct.client, direct.aclose)
    return RedisStorage(url, client=client, **options)
