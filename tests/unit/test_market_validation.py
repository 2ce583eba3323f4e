from starkmatter.market import models, validation

NOW = 1_795_611_600_000_000_000
S = 1_000_000_000
P = models.SCALE


def _validator(**rules: object) -> validation.Validator:
    return validation.Validator(
        validation.Rules(symbols=frozenset({"AAPL"}), **rules),  # type: ignore[arg-type]
        {"AAPL": 200 * P},
    )


def _trade(**changes: object) -> models.Trade:
    fields: dict[str, object] = {"symbol": "AAPL", "ts_ns": NOW, "price": 201 * P,
                                 "size": 100 * P, "trade_id": "t1"}  # fmt: skip
    fields.update(changes)
    return models.Trade(**fields)  # type: ignore[arg-type]


def test_a_sane_trade_passes() -> None:
    assert _validator().check(_trade(), NOW) is None


def test_a_price_outside_the_daily_band_is_refused() -> None:
    v = _validator(band_bps=1_000)
    assert v.check(_trade(price=220 * P, trade_id="a"), NOW) is None
    assert v.check(_trade(price=220 * P + 1, trade_id="b"), NOW) == "price_out_of_band"
    assert v.check(_trade(price=180 * P - 1, trade_id="c"), NOW) == "price_out_of_band"


def test_zero_or_negative_prices_are_invalid() -> None:
    assert _validator().check(_trade(price=0), NOW) == "invalid_price"


def test_negative_volume_is_refused_and_zero_volume_accepted() -> None:
    v = _validator()
    assert v.check(_trade(size=-1), NOW) == "negative_volume"
    assert v.check(_trade(size=0), NOW) is None


def test_sizes_beyond_any_real_print_are_out_of_range() -> None:
    # Stored as numeric(24,8); a size that passed would fail the COPY, and the writer would
    # retry that batch for ever while the feed looked alive.
    v = _validator(max_size=1_000 * P)
    big = 1_000 * P + 1
    assert v.check(_trade(size=1_000 * P, trade_id="a"), NOW) is None
    assert v.check(_trade(size=big, trade_id="b"), NOW) == "size_out_of_range"
    assert v.check(models.Quote("AAPL", NOW, 200 * P, 201 * P, P, big), NOW) == (
        "size_out_of_range"
    )
    assert v.check(models.Depth("AAPL", NOW, ((200 * P, big),), ()), NOW) == "size_out_of_range"
    bar = models.Bar("AAPL", "1m", NOW - 60 * S, 200 * P, 201 * P, 199 * P, 200 * P, big, P, 1)
    assert v.check(bar, NOW) == "size_out_of_range"


def test_the_default_size_limit_keeps_storage_safe() -> None:
    assert validation.Rules().max_size * 1_000 < models.LIMIT  # a bar may sum 1,000 of them


def test_stale_and_future_timestamps_are_refused_by_configured_limits() -> None:
    v = _validator(max_staleness_s=60, max_skew_s=5)
    assert v.check(_trade(ts_ns=NOW - 61 * S, trade_id="a"), NOW) == "stale_timestamp"
    assert v.check(_trade(ts_ns=NOW + 6 * S, trade_id="b"), NOW) == "future_timestamp"
    assert v.check(_trade(ts_ns=NOW - 59 * S, trade_id="c"), NOW) is None


def test_backfills_may_disable_the_staleness_rule() -> None:
    v = _validator(max_staleness_s=None)
    assert v.check(_trade(ts_ns=NOW - 86_400 * 30 * S), NOW) is None


def test_symbols_outside_the_universe_are_unknown() -> None:
    assert _validator().check(_trade(symbol="ZZZQ"), NOW) == "unknown_symbol"


def test_crossed_quotes_are_refused_and_locked_ones_accepted() -> None:
    v = _validator()
    crossed = models.Quote("AAPL", NOW, 201 * P, 200 * P, P, P)
    locked = models.Quote("AAPL", NOW, 200 * P, 200 * P, P, P)
    assert v.check(crossed, NOW) == "crossed_quote"
    assert v.check(locked, NOW) is None


def test_the_same_event_twice_is_a_duplicate() -> None:
    v = _validator()
    assert v.check(_trade(), NOW) is None
    assert v.check(_trade(), NOW) == "duplicate"
    assert v.check(_trade(trade_id="t2"), NOW) is None


def test_duplicate_memory_is_bounded_by_the_window() -> None:
    v = _validator(dedup_window=2)
    for trade_id in ("a", "b", "c"):
        assert v.check(_trade(trade_id=trade_id), NOW) is None
    assert v.check(_trade(trade_id="a"), NOW) is None
    assert v.check(_trade(trade_id="c"), NOW) == "duplicate"


def test_without_a_reference_the_first_price_anchors_the_band() -> None:
    v = validation.Validator(validation.Rules())
    assert v.check(_trade(symbol="NEW", price=10 * P), NOW) is None
    assert v.check(_trade(symbol="NEW", price=20 * P, trade_id="x"), NOW) == "price_out_of_band"


def test_crossed_depth_and_inconsistent_bars_are_refused() -> None:
    v = _validator()
    depth = models.Depth("AAPL", NOW, ((201 * P, P),), ((200 * P, P),))
    bar = models.Bar("AAPL", "1m", NOW - 60 * S, 200 * P, 199 * P, 198 * P, 199 * P, P, P, 1)
    assert v.check(depth, NOW) == "crossed_quote"
    assert v.check(bar, NOW) == "inconsistent_bar"
