"""Year-based retention ages are calendar years, never 365-day multiples; CR ages in days
stay days."""

from __future__ import annotations

import datetime as dt

from starkmatter.retention import datasets, policies

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)


def _seed_rule(dataset: str) -> policies.Rule:
    (rule,) = [r for r in policies.default("file:///tmp/archive").rules if r.dataset == dataset]
    return rule


def test_seven_years_of_trade_data_end_on_the_seventh_anniversary() -> None:
    # 3 December 2019 to 3 December 2026 holds two leap days: 2557 days, not 7 * 365.
    for dataset in ("orders", "executions", "portfolio_snapshots"):
        cutoff = _seed_rule(dataset).cutoff(NOW)
        assert cutoff == dt.datetime(2019, 12, 3, 12, tzinfo=dt.UTC)
        assert NOW - cutoff == dt.timedelta(days=2557)
    assert _seed_rule("audit").cutoff(NOW) == dt.datetime(2023, 12, 3, 12, tzinfo=dt.UTC)
    assert _seed_rule("ticks").cutoff(NOW) == dt.datetime(2024, 12, 3, 12, tzinfo=dt.UTC)


def test_the_29th_of_february_counts_back_to_the_28th_never_later() -> None:
    leap_day = dt.datetime(2028, 2, 29, 9, tzinfo=dt.UTC)
    assert datasets.cutoff_years(leap_day, 7) == dt.datetime(2021, 2, 28, 9, tzinfo=dt.UTC)
    assert datasets.cutoff_years(leap_day, 4) == dt.datetime(2024, 2, 29, 9, tzinfo=dt.UTC)


def test_a_policy_age_in_days_stays_a_number_of_days() -> None:
    rule = policies.Rule.model_validate({"dataset": "executions", "olderThanDays": 2555})
    assert rule.cutoff(NOW) == NOW - dt.timedelta(days=2555)
    assert _seed_rule("alert_events").cutoff(NOW) == NOW - dt.timedelta(days=90)
    assert _seed_rule("sessions").cutoff(NOW) == NOW - dt.timedelta(days=30)
