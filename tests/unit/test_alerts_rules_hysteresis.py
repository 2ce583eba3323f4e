from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from starkmatter.alerts import pricing, rules

D = decimal.Decimal
T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def _latency(**kw: object) -> rules.AlertRule:
    data: dict[str, object] = {"name": "api-latency", "condition": "HighLatency",
                               "threshold": "250", "for": "2m", "severity": "critical"}  # fmt: skip
    data.update(kw)
    return rules.AlertRule.model_validate(data)


def _run(rule: rules.AlertRule, values: Sequence[str | None], step_s: int = 30) -> list[str]:
    """Feed one value per evaluation; return the transitions as 'firing@t' / 'resolved@t'."""
    state = rules.RuleState("ok", T0)
    out = []
    for i, raw in enumerate(values):
        now = T0 + dt.timedelta(seconds=step_s * i)
        state, transition = rules.step(
            rule, state, rules.observe(rule, None if raw is None else D(raw)), now
        )
        if transition:
            out.append(f"{transition.state}@{i}")
    return out


def test_fires_only_after_the_condition_held_for_its_duration() -> None:
    assert _run(_latency(), ["300", "300", "300", "300", "300"]) == ["firing@4"]


def test_a_blip_shorter_than_the_duration_never_fires() -> None:
    assert _run(_latency(), ["300", "300", "100", "300", "300", "100"]) == []


def test_value_hovering_at_the_threshold_does_not_flap() -> None:
    # Fires, then hovers between 240 and 260: inside the clear band, so it stays firing.
    values = ["300"] * 5 + ["240", "260", "240", "245", "260", "240"]
    assert _run(_latency(), values) == ["firing@4"]


def test_resolves_after_being_clear_for_the_clear_period() -> None:
    values = ["300"] * 5 + ["100", "100", "100"]
    assert _run(_latency(), values) == ["firing@4", "resolved@7"]


def test_unknown_values_neither_fire_nor_resolve() -> None:
    assert _run(_latency(), ["300"] * 5 + [None] * 6) == ["firing@4"]


def test_each_episode_has_its_own_fingerprint() -> None:
    rule = _latency(**{"for": "30s"})
    state = rules.RuleState("ok", T0)
    prints = []
    for i, raw in enumerate(["300", "300", "10", "10", "10", "300", "300"]):
        state, t = rules.step(
            rule, state, rules.observe(rule, D(raw)), T0 + dt.timedelta(minutes=i)
        )
        if t:
            prints.append(t.fingerprint)
    assert len(prints) == len(set(prints)) == 3


def test_ingestion_stopped_fires_when_the_heartbeat_is_older_than_for() -> None:
    rule = rules.AlertRule.model_validate(
        {"name": "feed", "condition": "DataIngestionStopped", "feed": "sim", "for": "2m"}
    )
    assert _run(rule, ["30", "150"]) == ["firing@1"]
    assert _run(rule, [None]) == ["firing@0"]
    assert _run(rule, ["150", "5", "5", "5"]) == ["firing@0", "resolved@3"]


def test_cache_failure_fires_and_resolves() -> None:
    rule = rules.AlertRule.model_validate(
        {"name": "redis", "condition": "CacheFailure", "for": "30s"}
    )
    assert _run(rule, ["1", "1", "0", "0", "0"]) == ["firing@1", "resolved@3"]


def test_data_quality_defaults_to_five_percent_with_a_lower_clear_level() -> None:
    rule = rules.AlertRule.model_validate(
        {"name": "q", "condition": "DataQualityIssue", "feed": "sim", "for": "30s"}
    )
    assert rules.observe(rule, D("5.1")).breached
    assert not rules.observe(rule, D("4.5")).breached and not rules.observe(rule, D("4.5")).clear
    assert rules.observe(rule, D("3")).clear


def test_price_below_clears_above_the_band() -> None:
    rule = rules.AlertRule(name="p", condition="PriceBelow", symbol="AAPL", threshold=D(100))
    assert rules.observe(rule, D(99)).breached
    assert not rules.observe(rule, D(105)).clear
    assert rules.observe(rule, D(112)).clear


def test_disabled_rule_never_fires() -> None:
    assert _run(_latency(enabled=False), ["900"] * 10) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"condition": "DataIngestionStopped"},
        {"condition": "HighLatency"},
        {"condition": "PriceAbove", "threshold": "1"},
        {"condition": "CacheFailure", "for": "5 minutes"},
    ],
)
def test_invalid_rules_are_refused(spec: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"."):
        rules.AlertRule.model_validate({"name": "x", **spec})


def test_rules_load_from_resource_files_and_report_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps({"apiVersion": "starkmatter.io/v1alpha1", "kind": "AlertRule",
                    "metadata": {"name": "redis-down"}, "spec": {"condition": "CacheFailure"}})
    )  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps({"condition": "HighLatency"}))
    (tmp_path / "c.json").write_text("{not json")
    loaded, problems = rules.load_dir(tmp_path)
    assert [r.name for r in loaded] == ["redis-down"]
    assert [p.split(":")[0] for p in problems] == ["b.json", "c.json"]


def test_p99_from_histogram_increase_between_scrapes() -> None:
    before = {0.005: 100.0, 0.05: 100.0, 0.5: 100.0, float("inf"): 100.0}
    after = {0.005: 1000.0, 0.05: 1090.0, 0.5: 1100.0, float("inf"): 1100.0}
    # 1000 new requests: 900 under 5 ms, 90 under 50 ms, 10 under 500 ms -> p99 in 50 ms.
    assert rules.p99_from_buckets(before, after) == D("50.000")
    assert rules.p99_from_buckets(after, after) is None


def test_price_alert_fires_on_the_crossing_edge_only() -> None:
    rule = pricing.PriceRule("r", "u", "AAPL", "price_above", D(200))
    held, fire = pricing.triggers(rule, D(199), {})
    assert (held, fire) == (False, False)
    held, fire = pricing.triggers(rule, D(201), {})
    assert (held, fire) == (True, True)
    again = pricing.PriceRule("r", "u", "AAPL", "price_above", D(200), condition_held=True)
    assert pricing.triggers(again, D(205), {}) == (True, False)


def test_percentage_move_counts_both_directions_from_the_reference() -> None:
    rule = pricing.PriceRule("r", "u", "X", "pct_move", D(5), reference_price=D(100))
    assert pricing.holds(rule, D("94.9"), {}) is True
    assert pricing.holds(rule, D("104"), {}) is False
    assert "moved -5.10%" in pricing.describe(rule, D("94.9"))


def test_indicator_alert_reads_the_named_indicator() -> None:
    rule = pricing.PriceRule("r", "u", "X", "indicator", D(70), "rsi_14", "above")
    assert pricing.holds(rule, None, {"rsi_14": D(75)}) is True
    assert pricing.holds(rule, None, {}) is None
