"""The CRDs as the real apiserver sees them: accepted, listed, and refusing bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter_operator import testing

ROOT = Path(__file__).resolve().parents[2]


def test_crds_are_served_under_the_starkmatter_category(cluster: testing.ControlPlane):
    out = cluster.kubectl("api-resources", "--categories=starkmatter", "-o", "name").stdout
    assert sorted(out.split()) == [
        "alertrules.starkmatter.io",
        "marketfeeds.starkmatter.io",
        "newssources.starkmatter.io",
        "retentionpolicies.starkmatter.io",
    ]


def test_short_names_collide_with_no_other_resource(cluster: testing.ControlPlane):
    lines = cluster.kubectl("api-resources", "--no-headers").stdout.splitlines()
    seen: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 5:  # NAME SHORTNAMES APIVERSION NAMESPACED KIND
            for short in parts[1].split(","):
                seen[short] = seen.get(short, 0) + 1
    for short in ["mf", "mfeed", "nsrc", "newssrc", "rtp", "retention", "alr", "arule"]:
        assert seen.get(short) == 1, short


def test_every_sample_is_accepted(cluster: testing.ControlPlane, namespace: str):
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "manifests" / "samples"))
    assert out.stdout.count("created") == 4


def test_defaults_are_filled_in_by_the_apiserver(cluster: testing.ControlPlane, namespace: str):
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input="apiVersion: starkmatter.io/v1alpha1\nkind: MarketFeed\n"
        "metadata: {name: minimal}\nspec: {symbols: [AAPL]}\n",
    )  # fmt: skip
    spec = cluster.get_json("mf", "minimal", "-n", namespace)["spec"]
    assert spec["provider"] == "simulator"
    assert spec["gateway"]["replicas"] == 2
    assert spec["gateway"]["autoscaling"]["enabled"] is False
    assert spec["redisSecretRef"] == {"name": "starkmatter-redis", "key": "url"}


def test_provider_fields_the_ingest_worker_reads_are_kept_by_the_apiserver(
    cluster: testing.ControlPlane, namespace: str
):
    specs: dict[str, dict[str, Any]] = {
        "replay": {"provider": "csv", "symbols": ["AAPL"], "path": "/data/t.csv", "speed": 5,
                   "referencePrices": {"AAPL": "189.84"}},
        "polled": {"provider": "rest", "url": "https://v.example/q", "symbols": ["AAPL"],
                   "fieldMapping": {"items": "data", "symbol": "s", "bid": "q.b"}},
        "replay-from-config-map": {
            "provider": "csv", "symbols": ["AAPL"], "speed": 5,
            "source": {"configMapRef": {"name": "aapl-2024-01", "key": "aapl.csv"}}},
        "replay-from-claim": {
            "provider": "csv", "symbols": ["AAPL"],
            "source": {"persistentVolumeClaim": {"claimName": "backfills",
                                                 "subPath": "2024-01/aapl.csv"}}},
    }  # fmt: skip
    for name, spec in specs.items():
        body = {"apiVersion": "starkmatter.io/v1alpha1", "kind": "MarketFeed",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        stored = cluster.get_json("mf", name, "-n", namespace)["spec"]
        # Unknown fields would have been pruned silently: every one must come back.
        assert {k: stored[k] for k in spec} == spec


INVALID = {
    "duplicate-symbols": (
        "MarketFeed", {"symbols": ["AAPL", "MSFT", "AAPL"]}, "symbols must be unique"
    ),
    "no-symbols": ("MarketFeed", {"symbols": []}, "should have at least 1 items"),
    "lower-case-symbol": ("MarketFeed", {"symbols": ["aapl"]}, "should match"),
    "websocket-without-url": (
        "MarketFeed", {"provider": "websocket", "symbols": ["A"]}, "spec.url is required"
    ),
    "rest-with-ws-url": (
        "MarketFeed",
        {"provider": "rest", "url": "ws://x", "symbols": ["A"]},
        "a rest provider needs an http:// or https:// url",
    ),
    "csv-without-path": (
        "MarketFeed", {"provider": "csv", "symbols": ["A"]},
        "a csv provider needs spec.path or spec.source",
    ),
    "source-without-csv": (
        "MarketFeed",
        {"symbols": ["A"], "source": {"configMapRef": {"name": "t", "key": "t.csv"}}},
        "spec.source is only read by a csv provider",
    ),
    "source-on-rest": (
        "MarketFeed",
        {"provider": "rest", "url": "https://x", "symbols": ["A"],
         "source": {"persistentVolumeClaim": {"claimName": "c", "subPath": "t.csv"}}},
        "spec.source is only read by a csv provider",
    ),
    "source-and-path": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"], "path": "/data/t.csv",
         "source": {"configMapRef": {"name": "t", "key": "t.csv"}}},
        "spec.path and spec.source are exclusive",
    ),
    "source-of-two-kinds": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"],
         "source": {"configMapRef": {"name": "t", "key": "t.csv"},
                    "persistentVolumeClaim": {"claimName": "c", "subPath": "t.csv"}}},
        "exactly one of configMapRef or persistentVolumeClaim",
    ),
    "source-of-no-kind": (
        "MarketFeed", {"provider": "csv", "symbols": ["A"], "source": {}},
        "exactly one of configMapRef or persistentVolumeClaim",
    ),
    "source-key-without-name": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"], "source": {"configMapRef": {"key": "t.csv"}}},
        "spec.source.configMapRef.name: Required value",
    ),
    "source-key-not-a-file-name": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"],
         "source": {"configMapRef": {"name": "t", "key": "../t.csv"}}},
        "spec.source.configMapRef.key in body should match",
    ),
    "source-sub-path-escapes-the-claim": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"],
         "source": {"persistentVolumeClaim": {"claimName": "c", "subPath": "a/../../t.csv"}}},
        "subPath must not have . or .. segments",
    ),
    "source-sub-path-absolute": (
        "MarketFeed",
        {"provider": "csv", "symbols": ["A"],
         "source": {"persistentVolumeClaim": {"claimName": "c", "subPath": "/t.csv"}}},
        "spec.source.persistentVolumeClaim.subPath in body should match",
    ),
    "path-without-csv": (
        "MarketFeed", {"symbols": ["A"], "path": "/data/a.csv"}, "only read by a csv provider"
    ),
    "relative-csv-path": (
        "MarketFeed", {"provider": "csv", "symbols": ["A"], "path": "a.csv"}, "should match '^/'"
    ),
    "mapping-unknown-key": (
        "MarketFeed",
        {"provider": "rest", "url": "https://x", "symbols": ["A"], "fieldMapping": {"q": "a"}},
        "fieldMapping keys must be canonical tick fields",
    ),
    "reference-price-of-unlisted-symbol": (
        "MarketFeed", {"symbols": ["A"], "referencePrices": {"B": "1.5"}},
        "every spec.referencePrices key must be one of spec.symbols",
    ),
    "reference-price-not-a-number": (
        "MarketFeed", {"symbols": ["A"], "referencePrices": {"A": "cheap"}}, "should match"
    ),
    "hpa-min-above-max": (
        "MarketFeed",
        {"symbols": ["A"], "gateway": {"autoscaling": {"minReplicas": 9, "maxReplicas": 3}}},
        "minReplicas must not exceed maxReplicas",
    ),
    "bad-cron": (
        "NewsSource", {"url": "https://n.example/rss", "schedule": "every 5 minutes"},
        "must be a cron schedule",
    ),
    "streaming-rss": (
        "NewsSource", {"mode": "streaming", "format": "rss", "url": "https://n.example"},
        "a streaming source needs format sse, websocket or json",
    ),
    "archive-without-target": (
        "RetentionPolicy", {"rules": [{"dataset": "ticks", "olderThanDays": 30}]},
        "spec.archive is required when any rule archives",
    ),
    "dataset-twice": (
        "RetentionPolicy",
        {"rules": [{"dataset": "ticks", "olderThanDays": 30, "action": "delete"},
                   {"dataset": "ticks", "olderThanDays": 60, "action": "delete"}]},
        "each dataset may appear in only one rule",
    ),
    "audit-deleted": (
        "RetentionPolicy",
        {"rules": [{"dataset": "audit", "olderThanDays": 30, "action": "delete"}]},
        "the audit trail is append-only",
    ),
    "error-rate-above-100": (
        "AlertRule", {"condition": "DataQualityIssue", "feed": "f", "threshold": "150"},
        "error rate in percent",
    ),
    "latency-zero": (
        "AlertRule", {"condition": "HighLatency", "threshold": "0"}, "from 1 to 600000"
    ),
    "price-without-symbol": (
        "AlertRule", {"condition": "PriceAbove", "threshold": "10"}, "spec.symbol is required"
    ),
    "stopped-without-feed": (
        "AlertRule", {"condition": "DataIngestionStopped"}, "spec.feed is required"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_custom_resource_is_rejected_with_the_expected_message(
    cluster: testing.ControlPlane, namespace: str, case: str
):
    kind, spec, message = INVALID[case]
    body = {
        "apiVersion": "starkmatter.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": case, "namespace": namespace},
        "spec": spec,
    }
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr


def test_name_too_long_for_child_names_is_rejected(cluster: testing.ControlPlane, namespace: str):
    body = {
        "apiVersion": "starkmatter.io/v1alpha1",
        "kind": "MarketFeed",
        "metadata": {"name": "f" * 41, "namespace": namespace},
        "spec": {"symbols": ["A"]},
    }
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert "at most 40 characters" in result.stderr
