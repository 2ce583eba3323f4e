"""Switching off a firing operational rule ends its episode with one resolved event."""

from __future__ import annotations

import datetime as dt
import decimal

from starkmatter.alerts import rules

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def _rule(enabled: bool) -> rules.AlertRule:
    return rules.AlertRule.model_validate(
        {"name": "lat", "condition": "HighLatency", "threshold": "500", "for": "1m",
         "enabled": enabled}
    )  # fmt: skip


def test_disabling_a_firing_rule_resolves_its_episode() -> None:
    firing = rules.RuleState("firing", T0, None, T0)
    breached = rules.observe(_rule(True), decimal.Decimal(900))
    new, transition = rules.step(_rule(False), firing, breached, T0 + dt.timedelta(minutes=1))
    assert new.state == "ok"
    assert transition is not None
    assert (transition.state, transition.fingerprint) == (
        "resolved",
        f"op:lat:{T0.isoformat()}:resolved",
    )
