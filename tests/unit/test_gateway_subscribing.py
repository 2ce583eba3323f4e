"""The gateway's RESP push parser and event ids: pure functions, checked on any split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.gateway import fanout, subscribing


def push(*items: bytes | int) -> bytes:
    out = b"*%d\r\n" % len(items)
    for item in items:
        if isinstance(item, int):
            out += b":%d\r\n" % item
        else:
            out += b"$%d\r\n%s\r\n" % (len(item), item)
    return out


channels = st.sampled_from([b"market:quotes:AAPL", b"alerts:u1", b"news:all"])
# Payloads may hold anything, CR LF and "*" included: only the lengths delimit them.
payloads = st.binary(max_size=300)
pushes = st.lists(
    st.one_of(
        st.tuples(st.just(b"message"), channels, payloads),
        st.tuples(st.just(b"subscribe"), channels, st.integers(0, 1000)),
    ),
    max_size=30,
)


@given(pushes, st.lists(st.integers(1, 50), min_size=1, max_size=50))
def test_pushes_parse_the_same_however_the_stream_is_split(
    messages: list[tuple[bytes, bytes, bytes | int]], cuts: list[int]
) -> None:
    stream = b"".join(push(*m) for m in messages)
    buffer = bytearray()
    parsed: list[list[object]] = []
    position = 0
    sizes = iter(cuts * (len(stream) + 1))
    while position < len(stream):
        size = next(sizes)
        buffer += stream[position : position + size]
        position += size
        got, used = subscribing.parse_pushes(buffer)
        del buffer[:used]
        parsed.extend(got)
    assert parsed == [list(m) for m in messages]
    assert buffer == b""


@given(pushes, st.lists(st.integers(1, 50), min_size=1, max_size=50))
def test_messages_split_out_in_order_however_the_stream_is_split(
    messages: list[tuple[bytes, bytes, bytes | int]], cuts: list[int]
) -> None:
    stream = b"".join(push(*m) for m in messages)
    buffer = bytearray()
    channels: list[str] = []
    payloads: list[bytes] = []
    others: list[list[object]] = []
    position = 0
    sizes = iter(cuts * (len(stream) + 1))
    while position < len(stream):
        size = next(sizes)
        buffer += stream[position : position + size]
        position += size
        got_channels, got_payloads, got_others, used = subscribing.parse_messages(buffer)
        del buffer[:used]
        channels += got_channels
        payloads += got_payloads
        others += got_others
    assert list(zip(channels, payloads, strict=True)) == [
        (m[1].decode(), m[2]) for m in messages if m[0] == b"message"
    ]
    assert others == [list(m) for m in messages if m[0] != b"message"]
    assert buffer == b""


def test_redis_error_replies_are_skipped_and_garbage_is_refused() -> None:
    stream = b"-ERR wrong\r\n" + push(b"message", b"news:all", b"{}")
    assert subscribing.parse_pushes(stream) == ([[b"message", b"news:all", b"{}"]], len(stream))
    with pytest.raises(subscribing.ProtocolError):
        subscribing.parse_pushes(b"+OK\r\n")
    assert subscribing.parse_messages(stream) == (["news:all"], [b"{}"], [], len(stream))
    with pytest.raises(subscribing.ProtocolError):
        subscribing.parse_messages(b"+OK\r\n")


def test_event_ids_resume_only_from_the_same_gateway_process() -> None:
    assert fanout.parse_event_id("ab12cd34-17", "ab12cd34") == 17
    assert fanout.parse_event_id(" ab12cd34-0 ", "ab12cd34") == 0
    too_long = "ab12cd34-" + "9" * 19
    for foreign in ("ffffffff-17", "ab12cd34-", "ab12cd34--1", "ab12cd34-1e3", "17", "", too_long):
        assert fanout.parse_event_id(foreign, "ab12cd34") is None
