"""The SourceReady condition of a csv MarketFeed, decided from what the apiserver holds."""

from __future__ import annotations

import pytest

from starkmatter_operator import conditions, sources

CONFIG_MAP_SPEC = {
    "provider": "csv",
    "symbols": ["AAPL"],
    "source": {"configMapRef": {"name": "aapl-2024", "key": "aapl.csv"}},
}
CLAIM_SPEC = {
    "provider": "csv",
    "symbols": ["AAPL"],
    "source": {"persistentVolumeClaim": {"claimName": "ticks", "subPath": "2024-01/aapl.csv"}},
}


def verdict(spec, obj):
    ref = sources.reference(spec)
    assert ref is not None
    return sources.judge("trading", ref, sources.found(ref.kind, obj))


@pytest.mark.parametrize(
    "spec",
    [
        {"provider": "csv", "symbols": ["A"], "path": "/data/a.csv"},
        {"provider": "simulator", "symbols": ["A"]},
        {"symbols": ["A"], "source": CONFIG_MAP_SPEC["source"]},  # refused by the schema
    ],
    ids=["csv-path", "simulator", "no-provider"],
)
def test_a_feed_without_a_csv_source_references_nothing(spec):
    assert sources.reference(spec) is None


def test_a_missing_config_map_blocks_the_feed_and_names_the_object_and_key():
    v = verdict(CONFIG_MAP_SPEC, None)
    assert (v.ready, v.reason, v.blocking) == (False, "ConfigMapNotFound", True)
    assert "ConfigMap trading/aapl-2024 (spec.source.configMapRef) not found" in v.message
    assert "'aapl.csv'" in v.message


def test_a_config_map_without_the_key_says_which_keys_it_has():
    v = verdict(CONFIG_MAP_SPEC, {"data": {"msft.csv": "type,symbol\n"}, "binaryData": {"b": ""}})
    assert (v.ready, v.reason, v.blocking) == (False, "ConfigMapKeyNotFound", True)
    assert "ConfigMap trading/aapl-2024" in v.message
    assert "no key 'aapl.csv' (keys: 'b', 'msft.csv')" in v.message


@pytest.mark.parametrize("field", ["data", "binaryData"])
def test_a_config_map_with_the_key_is_ready(field):
    v = verdict(CONFIG_MAP_SPEC, {field: {"aapl.csv": "x"}})
    assert (v.ready, v.reason, v.blocking) == (True, "SourceFound", False)
    assert v.message == "ConfigMap trading/aapl-2024 has key 'aapl.csv'"


def test_found_keeps_the_key_names_of_a_config_map_not_its_contents():
    seen = sources.found(sources.CONFIG_MAP, {"data": {"aapl.csv": "secret-ish text"}})
    assert seen == sources.Found(keys=frozenset({"aapl.csv"}))


def test_a_missing_claim_blocks_the_feed_and_names_the_claim_and_file():
    v = verdict(CLAIM_SPEC, None)
    assert (v.ready, v.reason, v.blocking) == (False, "ClaimNotFound", True)
    assert "PersistentVolumeClaim trading/ticks (spec.source.persistentVolumeClaim)" in v.message
    assert "'2024-01/aapl.csv'" in v.message


def test_a_lost_claim_blocks_the_feed():
    v = verdict(CLAIM_SPEC, {"status": {"phase": "Lost"}})
    assert (v.ready, v.reason, v.blocking) == (False, "ClaimLost", True)


def test_a_pending_claim_is_not_ready_but_does_not_withhold_the_pod_that_would_bind_it():
    v = verdict(CLAIM_SPEC, {"status": {"phase": "Pending"}})
    assert (v.ready, v.reason, v.blocking) == (False, "ClaimPending", False)


def test_a_bound_claim_is_ready():
    v = verdict(CLAIM_SPEC, {"status": {"phase": "Bound"}})
    assert (v.ready, v.reason, v.blocking) == (True, "SourceFound", False)
    assert v.message == "PersistentVolumeClaim trading/ticks is Bound"


def test_the_condition_follows_the_api_convention_and_turns_true_when_the_object_appears():
    missing = sources.condition(verdict(CONFIG_MAP_SPEC, None), 3)
    assert missing == {
        "type": "SourceReady",
        "status": "False",
        "reason": "ConfigMapNotFound",
        "message": missing["message"],
        "observedGeneration": 3,
    }
    first = conditions.merge(None, [missing], "T1")
    present = sources.condition(verdict(CONFIG_MAP_SPEC, {"data": {"aapl.csv": ""}}), 3)
    (after,) = conditions.merge(first, [present], "T2")
    assert (after["status"], after["reason"], after["lastTransitionTime"]) == (
        "True",
        "SourceFound",
        "T2",
    )
