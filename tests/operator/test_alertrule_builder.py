from __future__ import annotations

import json

import pytest

from starkmatter_operator.builders import alertrule, common
from tests.operator.crs import by_kind, make_cr, sample


def test_rule_is_delivered_as_one_key_of_the_evaluator_config_map(cfg):
    (cm,) = alertrule.build(sample("AlertRule"), cfg)
    assert cm["metadata"]["namespace"] == cfg.alerts_namespace
    assert cm["metadata"]["name"] == cfg.alerts_configmap
    (key,) = cm["data"]
    assert key == "trading.us-equities-stopped.json"
    rule = json.loads(cm["data"][key])
    # A bare spec: the evaluator names the rule after the file (namespace.name).
    assert rule == sample("AlertRule")["spec"]
    # Cross-namespace: no owner reference, removal is done by the delete handler.
    assert "ownerReferences" not in cm["metadata"]


def test_each_rule_has_its_own_field_manager_so_rules_never_overwrite_each_other():
    a = make_cr("AlertRule", {"condition": "CacheFailure"}, name="a")
    b = make_cr("AlertRule", {"condition": "CacheFailure"}, name="b")
    assert alertrule.field_manager(a) != alertrule.field_manager(b)
    assert len(alertrule.field_manager(a)) <= 128


def test_prometheus_rule_is_added_where_the_crd_is_installed(cfg):
    manifests = alertrule.build(sample("AlertRule"), cfg, prometheus_rules=True)
    (rule,) = by_kind(manifests, "PrometheusRule")
    (entry,) = rule["spec"]["groups"][0]["rules"]
    assert entry["alert"] == "StarkMatterDataIngestionStopped"
    assert entry["for"] == "5m"
    assert entry["labels"] == {"severity": "critical", "feed": "us-equities"}
    assert entry["expr"] == (
        'max(starkmatter_alerts_firing{rule="trading.us-equities-stopped"}) > 0'
    )
    assert rule["metadata"]["ownerReferences"][0]["kind"] == "AlertRule"


def test_removing_a_rule_applies_an_empty_fragment_with_its_manager(cfg):
    empty = alertrule.rules_config_map(cfg, {})
    assert "data" not in empty


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"condition": "DataIngestionStopped"}, "spec.feed is required"),
        ({"condition": "DataQualityIssue", "threshold": "5"}, "spec.feed is required"),
        ({"condition": "PriceAbove", "threshold": "100"}, "spec.symbol is required"),
        ({"condition": "HighLatency"}, "spec.threshold is required"),
        ({"condition": "DataQualityIssue", "feed": "f", "threshold": "150"}, "at most 100"),
        ({"condition": "DataQualityIssue", "feed": "f", "threshold": "0"}, "above 0"),
        ({"condition": "HighLatency", "threshold": "0.5"}, "from 1 to 600000"),
        ({"condition": "HighLatency", "threshold": "700000"}, "from 1 to 600000"),
        ({"condition": "PriceBelow", "symbol": "AAPL", "threshold": "0"}, "must be above 0"),
        ({"condition": "PriceBelow", "symbol": "AAPL", "threshold": "abc"}, "not a decimal"),
    ],
)
def test_alertrule_the_operator_cannot_act_on_is_refused_with_a_reason(cfg, spec, message):
    with pytest.raises(common.InvalidSpec) as raised:
        alertrule.build(make_cr("AlertRule", spec), cfg)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"condition": "CacheFailure"},
        {"condition": "HighLatency", "threshold": "1000"},
        {"condition": "PriceAbove", "symbol": "AAPL", "threshold": "250.50"},
        {"condition": "DataQualityIssue", "feed": "us-equities", "threshold": "5"},
    ],
)
def test_valid_alert_rules_build(cfg, spec):
    assert alertrule.build(make_cr("AlertRule", spec), cfg)
