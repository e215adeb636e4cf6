"""RESP2 reading: hiredis's C reader and our pure-Python one give the very same replies,
however the bytes are split across reads; encoding round-trips through both."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.redis.protocol import (
    ErrorReply,
    ProtocolError,
    PythonReader,
    Reader,
    encode,
    make_reader,
)

hiredis = pytest.importorskip("hiredis")

# A line of text as a server writes it: UTF-8 (no lone surrogates), no line break.
line_char = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
# What a server can send: simple strings, errors, integers, bulk strings, nulls, arrays.
leaf = st.one_of(
    st.binary(max_size=40).map(lambda b: ("bulk", b)),
    st.text(
        alphabet=line_char,
        max_size=20,
    ).map(lambda t: ("simple", t)),
    st.text(
        alphabet=line_char,
        min_size=1,
        max_size=20,
    ).map(lambda t: ("error", t)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: ("int", n)),
    st.just(("null", None)),
    st.just(("null_array", None)),
)
reply = st.recursive(leaf, lambda inner: st.lists(inner, max_size=5).map(lambda x: ("array", x)),
                     max_leaves=20)  # fmt: skip


def wire(node: tuple[str, object]) -> bytes:
    kind, value = node
    if kind == "bulk":
        assert isinstance(value, bytes)
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if kind == "simple":
        return b"+" + str(value).encode() + b"\r\n"
    if kind == "error":
        return b"-" + str(value).encode() + b"\r\n"
    if kind == "int":
        assert isinstance(value, int)
        return b":%d\r\n" % value
    if kind == "null":
        return b"$-1\r\n"
    if kind == "null_array":
        return b"*-1\r\n"
    assert isinstance(value, list)
    return b"*%d\r\n" % len(value) + b"".join(wire(item) for item in value)


def comparable(value: object) -> object:
    """Replies as plain data (an ErrorReply compared by its text)."""
    if isinstance(value, ErrorReply):
        return ("error", str(value))
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


def read_all(reader: Reader, data: bytes, cuts: list[int]) -> list[object]:
    replies = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[start:cut])
        start = cut
        while (one := reader.gets()) is not False:
            replies.append(comparable(one))
    return replies


@settings(max_examples=80, deadline=None)
@given(replies=st.lists(reply, min_size=1, max_size=8), data=st.data())
def test_both_readers_read_the_same_replies_however_the_bytes_arrive(
    replies: list[tuple[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(wire(one) for one in replies)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    python = read_all(PythonReader(), stream, cuts)
    native = read_all(make_reader(), stream, cuts)
    assert python == native
    assert len(python) == len(replies)


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.one_of(st.binary(max_size=30), st.integers(-(10**12), 10**12)),
                      min_size=1, max_size=6))  # fmt: skip
def test_an_encoded_command_reads_back_as_its_parts(parts: list[bytes | int]) -> None:
    encoded = encode(*parts)
    for reader in (PythonReader(), make_reader()):
        reader.feed(encoded)
        assert reader.gets() == [p if isinstance(p, bytes) else str(p).encode() for p in parts]


@pytest.mark.parametrize("make", [PythonReader, make_reader], ids=["python", "hiredis"])
def test_bytes_that_are_not_resp_are_a_protocol_error(make: type[PythonReader]) -> None:
    reader = make()
    reader.feed(b"?what\r\n")
    with pytest.raises(ProtocolError):
        reader.gets()


def test_an_error_reply_is_a_value_with_its_code() -> None:
    reader = make_reader()
    reader.feed(b"-NOSCRIPT No matching script\r\n")
    error = reader.gets()
    assert isinstance(error, ErrorReply)
    assert error.code == "NOSCRIPT"


def test_encode_refuses_what_redis_cannot_take() -> None:
    with pytest.raises(TypeError):
        encode(b"SET", b"k", None)  # type: ignore[arg-type]
