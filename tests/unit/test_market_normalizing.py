import pytest

from starkmatter.market import models, normalizing

TS = "2026-11-25T13:00:00.123456789Z"
TS_NS = 1_795_611_600_123_456_789


def test_trade_fields_normalize_to_fixed_point_utc_and_upper_case_symbol() -> None:
    trade = normalizing.normalize(
        {"type": "trade", "symbol": " aapl ", "ts": TS, "price": "227.5", "size": 100,
         "trade_id": 42, "seq": 7}
    )  # fmt: skip
    assert trade == models.Trade("AAPL", TS_NS, 22_750_000_000, 10_000_000_000, "42", 7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TS, TS_NS),
        ("2026-11-25T14:00:00.123456789+01:00", TS_NS),
        ("2026-11-25T13:00:00Z", TS_NS - 123_456_789),
        (1_795_611_600, TS_NS - 123_456_789),
        (1_795_611_600_123, TS_NS - 456_789),
        (1_795_611_600_123_456, TS_NS - 789),
        (TS_NS, TS_NS),
    ],
)
def test_timestamps_of_every_shape_become_utc_nanoseconds(raw: object, expected: int) -> None:
    assert normalizing.parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2026-11-25T13:00:00",
        "2026-13-25T13:00:00Z",
        "yesterday",
        -5,
        1.5,
        None,
        # impossible dates and times, which calendar.timegm would roll into real ones
        "2026-02-30T12:00:00Z",
        "2026-11-25T25:00:00Z",
        "2026-11-25T13:61:00Z",
        "2026-11-25T13:00:60Z",
        "2026-11-25T13:00:00+99:99",
        " 026-11-25T13:00:00Z",
        "2026-11-25T13:00:00+0a:00",
    ],
)
def test_unreadable_or_zoneless_timestamps_are_malformed(raw: object) -> None:
    with pytest.raises(normalizing.Malformed):
        normalizing.parse_timestamp(raw)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "trade", "symbol": "AAPL", "ts": TS, "price": "x", "size": 1},
        {"type": "trade", "symbol": "AAPL", "ts": TS, "size": 1},
        {"type": "trade", "symbol": "AAPL", "price": 1, "size": 1},
        {"type": "trade", "symbol": "$$$", "ts": TS, "price": 1, "size": 1},
        {"type": "trade", "symbol": 5, "ts": TS, "price": 1, "size": 1},
        {"type": "nonsense", "symbol": "AAPL", "ts": TS},
        {"type": "trade", "symbol": "AAPL", "ts": TS, "price": 1e30, "size": 1},
        {"type": "trade", "symbol": "AAPL", "ts": TS, "price": 1, "size": "-"},
        {"type": "depth", "symbol": "AAPL", "ts": TS, "bids": [[1]], "asks": []},
        {"type": "bar", "symbol": "AAPL", "ts": TS, "interval": "7m", "open": 1, "high": 1,
         "low": 1, "close": 1, "volume": 1},
    ],
)  # fmt: skip
def test_unreadable_messages_raise_malformed_with_a_detail(fields: dict[str, object]) -> None:
    with pytest.raises(normalizing.Malformed) as caught:
        normalizing.normalize(fields)
    assert caught.value.detail


def test_depth_levels_keep_their_order_best_first() -> None:
    depth = normalizing.normalize(
        {"type": "depth", "symbol": "msft", "ts": TS, "bids": [["10.02", 5], ["10.01", 7]],
         "asks": [["10.03", 1]]}
    )  # fmt: skip
    assert isinstance(depth, models.Depth)
    assert depth.bids == ((1_002_000_000, 500_000_000), (1_001_000_000, 700_000_000))
    assert depth.asks == ((1_003_000_000, 100_000_000),)


def test_bar_start_is_aligned_to_its_interval() -> None:
    bar = normalizing.normalize(
        {"type": "bar", "symbol": "AAPL", "ts": TS, "interval": "1m", "open": 1, "high": 2,
         "low": 1, "close": 2, "volume": 10}
    )  # fmt: skip
    assert isinstance(bar, models.Bar)
    assert bar.start_ns == TS_NS - TS_NS % 60_000_000_000
