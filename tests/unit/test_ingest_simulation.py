import json

from hypothesis import given, settings
from hypothesis import strategies as st

from starkmatter.ingest import simulation
from starkmatter.ingest.providers import alpaca, base, simulated
from starkmatter.market import models, normalizing, validation

NOW = 1_795_611_600_000_000_000


def test_good_messages_normalize_and_validate_cleanly() -> None:
    sim = simulation.MarketSimulation(seed=5)
    refs = {s: models.to_fixed(p) for s, p in sim.references().items()}
    validator = validation.Validator(
        validation.Rules(symbols=frozenset(refs), band_bps=1_000), refs
    )
    for emitted in sim.step(NOW, 2_000):
        event = normalizing.normalize(json.loads(emitted.text, parse_float=str))
        assert validator.check(event, NOW) is None


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_every_bad_message_is_refused_with_the_reason_of_its_class(seed: int) -> None:
    sim = simulation.MarketSimulation(seed=seed, bad_share=0.5)
    refs = {s: models.to_fixed(p) for s, p in sim.references().items()}
    validator = validation.Validator(validation.Rules(symbols=frozenset(refs)), refs)
    for emitted in sim.step(NOW, 300):
        try:
            event = normalizing.normalize(json.loads(emitted.text, parse_float=str))
        except (ValueError, normalizing.Malformed):
            assert emitted.bad is simulation.BadKind.MALFORMED
            continue
        reason = validator.check(event, NOW)
        assert reason == (None if emitted.bad is None else emitted.bad.value)


def test_sequence_gaps_and_replays_are_counted_per_symbol() -> None:
    tracker = base.SequenceTracker()
    assert [tracker.observe("A", n) for n in (1, 2, 5, 3, 6)] == [0, 0, 2, 0, 0]
    assert tracker.observe("B", 10) == 0
    assert (tracker.gaps, tracker.missing, tracker.replayed) == (1, 2, 1)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    import random

    backoff = base.Backoff(initial_s=1, maximum_s=8)
    rng = random.Random(1)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        delay = backoff.delay(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_simulator_frames_decode_to_incoming_and_malformed_frames_are_kept_raw() -> None:
    provider = simulated.SimulatorProvider("sim", "ws://unused")
    batch = provider.decode('[{"type":"heartbeat"},{"type":"trade","symbol":"A","seq":1},7]')
    assert [b.fields for b in batch] == [{"type": "trade", "symbol": "A", "seq": 1}, None]
    [broken] = provider.decode('{"type":"trade"')
    assert broken.fields is None and broken.raw == '{"type":"trade"' and broken.error


def test_alpaca_messages_map_to_canonical_fields_with_exact_prices() -> None:
    provider = alpaca.AlpacaProvider("a", "ws://unused", ["AAPL"], token="k:s")
    [trade, quote] = provider.decode(
        '[{"T":"t","S":"AAPL","i":9,"p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z"},'
        '{"T":"q","S":"AAPL","bp":87.66,"bs":1,"ap":87.68,"as":4,"t":"2021-02-22T15:51:45Z"}]'
    )
    assert trade.fields is not None and quote.fields is not None
    assert normalizing.normalize(trade.fields).price == 12_655_000_000  # type: ignore[union-attr]
    assert normalizing.normalize(quote.fields).ask == 8_768_000_000  # type: ignore[union-attr]
