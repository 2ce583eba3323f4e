import pytest

from starkmatter.core.auth import tokens
from starkmatter.gateway import connections, fanout, server, topics

ALICE = tokens.Principal("alice", frozenset({"trader"}), "s", "t")


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("market:quotes:AAPL", "market"),
        ("market:depth:BTC/USD", "market"),
        ("news:all", "news"),
        ("news:earnings", "news"),
        ("portfolio:alice", "own"),
        ("alerts:alice", "own"),
        ("orders:alice", "own"),
    ],
)
def test_open_and_own_topics_are_allowed(topic: str, kind: str) -> None:
    assert topics.authorize(topic, ALICE) == kind


@pytest.mark.parametrize("topic", ["portfolio:bob", "alerts:bob", "orders:bob"])
def test_another_users_private_topics_are_forbidden(topic: str) -> None:
    with pytest.raises(topics.Refused) as refused:
        topics.authorize(topic, ALICE)
    assert refused.value.code == "forbidden"


def test_an_ai_analysis_is_only_for_the_user_who_requested_it() -> None:
    assert topics.authorize("ai:analysis:r1", ALICE, ai_owner="alice") == "ai"
    for owner in ("bob", None):
        with pytest.raises(topics.Refused):
            topics.authorize("ai:analysis:r1", ALICE, ai_owner=owner)


@pytest.mark.parametrize("topic", ["market:quotes:", "market:trades:AAPL", "secret", "x" * 200])
def test_unknown_topics_are_refused(topic: str) -> None:
    with pytest.raises(topics.Refused) as refused:
        topics.authorize(topic, ALICE)
    assert refused.value.code == "unknown_topic"


def test_snapshots_of_market_topics_are_the_ingest_cache_keys() -> None:
    assert topics.snapshot_key("market:quotes:AAPL") == "quote:AAPL"
    assert topics.snapshot_key("market:depth:AAPL") == "depth:AAPL"
    assert topics.snapshot_key("news:all") == "snapshot:news:all"


def test_only_market_data_may_be_conflated() -> None:
    assert topics.conflatable("market:quotes:AAPL")
    assert not topics.conflatable("alerts:alice")


def test_update_frames_embed_json_payloads_verbatim_and_quote_plain_text() -> None:
    assert fanout.update_body("news:all", b'{"a":1}') == (
        b'{"type":"update","topic":"news:all","data":{"a":1}}'
    )
    assert fanout.update_body("news:all", b"hello") == (
        b'{"type":"update","topic":"news:all","data":"hello"}'
    )


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_server_frames_use_the_right_length_encoding(size: int) -> None:
    frame = server.ws_text_frame(b"x" * size)
    assert frame[0] == 0x81 and frame.endswith(b"x" * size)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65_536 else 10)


def test_connection_state_transitions_are_checked() -> None:
    class Transport:
        def set_write_buffer_limits(self, high: int, low: int) -> None:
            pass

    class Bare(connections.Client):
        def encode(self, body: bytes, event_id: str | None = None) -> bytes:
            return body

        def close(self, code: int, reason: str) -> None:
            self.transition(connections.ConnectionState.CLOSED)

    client = Bare(Transport(), connections.Limits())  # type: ignore[arg-type]
    client.transition(connections.ConnectionState.UNAUTHENTICATED)
    client.transition(connections.ConnectionState.OPEN)
    with pytest.raises(connections.InvalidTransition, match="expected one of"):
        client.transition(connections.ConnectionState.UNAUTHENTICATED)
