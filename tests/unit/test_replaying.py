"""Replay numbers across gateways: the envelope a numbered publish carries, and event ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from starkmatter.core import replaying
from starkmatter.gateway import fanout, server

numbers = st.integers(0, 10**17)


@given(numbers, st.binary(max_size=200))
def test_a_numbered_payload_splits_back_into_its_number_and_payload(
    number: int, payload: bytes
) -> None:
    wrapped = replaying.MARK + str(number).encode() + replaying.MARK + payload
    assert replaying.split(wrapped) == (number, payload)


def test_a_payload_without_a_number_is_left_as_it_is() -> None:
    for payload in (b'{"n": 1}', b"", b"\x1e", b"\x1e12", b"\x1ex\x1e{}", b"\x1e\x1e{}"):
        assert replaying.split(payload) == (None, payload)


@given(st.text("0123456789abcdef", min_size=8, max_size=8), numbers, numbers)
def test_any_gateway_reads_the_replay_clock_of_an_event_id(
    epoch: str, seq: int, clock: int
) -> None:
    event_id = f"{epoch}-{seq}-{clock}"
    assert fanout.parse_clock(event_id) == clock
    assert fanout.parse_event_id(event_id, epoch) == seq
    frame = server.SseClient.encode(None, b'{"type":"update"}', event_id)  # type: ignore[arg-type]
    assert fanout.frame_clock(frame) == clock


def test_an_event_id_without_a_replay_clock_has_none() -> None:
    for event_id in ("ab12cd34-17", "another-gateway-7", "garbage", "", "a-1-2-3", "a-1-x"):
        assert fanout.parse_clock(event_id) is None
    assert fanout.frame_clock(b"event: update\ndata: {}\n\n") is None
    assert fanout.frame_clock(b"id: ab12cd34-17\nevent: update\ndata: {}\n\n") is None
