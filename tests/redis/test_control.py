"""The control-plane exchange: RESP replies read back whatever the chunking, and the bounds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.redis.address import TcpAddress
from sergas_guard.redis.control import (
    MAX_REPLY_BYTES,
    ErrorReply,
    ProtocolError,
    Reply,
    ReplyReader,
    exchange,
    exchange_sync,
)
from tests.servers import RedisServer, redis_server

# Text without CR/LF for simple strings and errors (the protocol cannot carry them there).
line_text = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"))
replies: st.SearchStrategy[Reply] = st.recursive(
    st.one_of(
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.text(st.characters(codec="utf-8")),
        line_text.map(lambda text: ErrorReply("ERR " + text)),
    ),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


def wire(reply: Reply, *, simple: bool = False) -> bytes:
    """How a server writes ``reply`` (the test's own writer, the reader's oracle)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, ErrorReply):
        return b"-%b\r\n" % reply.text.encode()
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, str):
        data = reply.encode()
        if simple and b"\r" not in data and b"\n" not in data:
            return b"+%b\r\n" % data
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return b"*%d\r\n" % len(reply) + b"".join(wire(item, simple=simple) for item in reply)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@settings(max_examples=200, deadline=None)
@given(st.lists(replies, min_size=1, max_size=4), st.lists(st.integers(0, 10_000)), st.booleans())
def test_replies_read_back_whatever_the_chunking(
    sent: list[Reply], cuts: list[int], simple: bool
) -> None:
    data = b"".join(wire(reply, simple=simple) for reply in sent)
    reader = ReplyReader()
    received: list[Reply] = []
    for piece in chunked(data, cuts):
        reader.feed(piece)
        received.extend(reader.replies())
    assert received == sent


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n", b"$abc\r\n", b"*x\r\n"])
def test_bytes_that_are_not_resp_are_refused(garbage: bytes) -> None:
    reader = ReplyReader()
    reader.feed(garbage)
    with pytest.raises(ProtocolError):
        list(reader.replies())


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


@pytest.mark.redis
async def test_an_exchange_returns_each_reply_in_order(server: RedisServer) -> None:
    address = TcpAddress("127.0.0.1", server.port)
    commands = [("SET", "ctl:k", "ünïcode"), ("GET", "ctl:k"), ("NOSUCH",), ("ROLE",)]
    for replies_ in (
        exchange_sync(address, commands, timeout=2.0),
        await exchange(address, commands),
    ):
        ok, value, error, role = replies_
        assert (ok, value) == ("OK", "ünïcode")
        assert isinstance(error, ErrorReply)
        assert error.code == "ERR"
        assert isinstance(role, list)
        assert role[0] == "master"


@pytest.mark.redis
async def test_an_exchange_reads_no_more_than_its_bound(server: RedisServer) -> None:
    address = TcpAddress("127.0.0.1", server.port)
    exchange_sync(address, [("SET", "ctl:big", "x" * MAX_REPLY_BYTES)], timeout=2.0)
    with pytest.raises(ProtocolError, match="more than"):
        exchange_sync(address, [("GET", "ctl:big")], timeout=2.0)
    with pytest.raises(ProtocolError, match="more than"):
        await exchange(address, [("GET", "ctl:big")])
