from __future__ import annotations

import json
from typing import Any

import pytest

from starkmatter_operator.builders import common, marketfeed
from tests.operator.crs import by_kind, make_cr, sample


def test_sample_marketfeed_builds_config_ingest_gateway_and_service(cfg):
    manifests = marketfeed.build(sample("MarketFeed"), cfg)
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in manifests)
    assert kinds == [
        ("ConfigMap", "us-equities-feed"),
        ("Deployment", "us-equities-gateway"),
        ("Deployment", "us-equities-ingest"),
        ("Service", "us-equities-gateway"),
    ]


def test_every_child_is_owned_by_the_feed_and_labelled_as_managed(cfg):
    for m in marketfeed.build(sample("MarketFeed"), cfg):
        (owner,) = m["metadata"]["ownerReferences"]
        assert owner["kind"] == "MarketFeed"
        assert owner["uid"] == "uid-sample"
        assert owner["controller"] is True
        assert m["metadata"]["namespace"] == "trading"
        assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "starkmatter-operator"


def test_feed_config_map_holds_the_spec_as_json_for_the_ingest_entry_point(cfg):
    body = sample("MarketFeed")
    (cm,) = by_kind(marketfeed.build(body, cfg), "ConfigMap")
    config_json = json.loads(cm["data"]["feed.json"])
    assert config_json["symbols"] == body["spec"]["symbols"]
    assert config_json["name"] == "us-equities"


def test_ingest_runs_the_ingest_entry_point_with_secrets_by_reference(cfg):
    deployments = by_kind(marketfeed.build(sample("MarketFeed"), cfg), "Deployment")
    ingest = next(d for d in deployments if d["metadata"]["name"].endswith("-ingest"))
    container = ingest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["ingest", "--feed", "us-equities"]
    assert container["image"] == "registry.example/starkmatter:1.2.3"
    env = {e["name"]: e for e in container["env"]}
    assert env["STARKMATTER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "starkmatter-database",
        "key": "url",
    }
    assert "value" not in env["STARKMATTER_REDIS_URL"]
    assert env["STARKMATTER_FEED_CONFIG"]["value"] == "/etc/starkmatter/config/feed.json"
    # One provider connection per feed: never two ingest pods during a rollout.
    assert ingest["spec"]["strategy"]["type"] == "Recreate"


def test_every_pod_template_meets_the_restricted_profile(cfg):
    for d in by_kind(marketfeed.build(sample("MarketFeed"), cfg), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"]
            assert c["readinessProbe"] and c["livenessProbe"]


def test_a_spec_change_changes_the_pod_template_so_the_pods_roll(cfg):
    body = sample("MarketFeed")
    before = by_kind(marketfeed.build(body, cfg), "Deployment")[0]
    body["spec"]["symbols"] = [*body["spec"]["symbols"], "TSLA"]
    after = by_kind(marketfeed.build(body, cfg), "Deployment")[0]
    key = "starkmatter.io/config-hash"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_gateway_service_targets_the_gateway_pods_on_the_spec_port(cfg):
    body = sample("MarketFeed")
    body["spec"]["gateway"]["port"] = 9000
    manifests = marketfeed.build(body, cfg)
    (svc,) = by_kind(manifests, "Service")
    gateway = next(
        d for d in by_kind(manifests, "Deployment") if "gateway" in d["metadata"]["name"]
    )
    assert svc["spec"]["ports"][0]["port"] == 9000
    assert svc["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]


def test_the_gateway_serves_metrics_on_a_port_of_its_own_that_its_service_leaves_out(cfg):
    manifests = marketfeed.build(sample("MarketFeed"), cfg)
    gateway = next(
        d for d in by_kind(manifests, "Deployment") if "gateway" in d["metadata"]["name"]
    )
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STARKMATTER_METRICS_PORT"] == str(ports["metrics"])
    assert ports["metrics"] != ports["http"]
    (svc,) = by_kind(manifests, "Service")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]


def test_autoscaling_adds_an_hpa_and_leaves_replicas_to_it(cfg):
    body = sample("MarketFeed")
    body["spec"]["gateway"]["autoscaling"] = {"enabled": True, "minReplicas": 3, "maxReplicas": 7}
    manifests = marketfeed.build(body, cfg)
    (hpa,) = by_kind(manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    gateway = next(
        d for d in by_kind(manifests, "Deployment") if "gateway" in d["metadata"]["name"]
    )
    assert "replicas" not in gateway["spec"]


def test_without_autoscaling_there_is_no_hpa(cfg):
    assert by_kind(marketfeed.build(sample("MarketFeed"), cfg), "HorizontalPodAutoscaler") == []


def test_provider_credentials_are_passed_by_secret_reference_and_checked(cfg):
    body = make_cr(
        "MarketFeed",
        {
            "provider": "websocket",
            "url": "wss://feed.example/ws",
            "symbols": ["AAPL"],
            "credentialsSecretRef": {"name": "vendor", "key": "api-key"},
        },
    )
    ingest = by_kind(marketfeed.build(body, cfg), "Deployment")[0]
    env = {e["name"]: e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STARKMATTER_FEED_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "vendor"
    refs = marketfeed.required_secrets(body, cfg)
    assert common.SecretKeyRef("vendor", "api-key", "spec.credentialsSecretRef") in refs


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"symbols": ["AAPL", "MSFT", "AAPL"]}, "symbols must be unique (repeated: AAPL)"),
        ({"symbols": []}, "at least one symbol"),
        ({"symbols": ["AAPL", " "]}, "symbols must not be empty"),
        ({"symbols": ["aapl"]}, "malformed symbols: aapl"),
        ({"provider": "websocket", "symbols": ["A"]}, "spec.url is required"),
        ({"provider": "websocket", "url": "http://x", "symbols": ["A"]}, "ws:// or wss://"),
        ({"provider": "rest", "url": "ws://x", "symbols": ["A"]}, "http:// or https://"),
        (
            {"symbols": ["A"], "gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "minReplicas must not exceed maxReplicas",
        ),
        ({"provider": "csv", "symbols": ["A"]}, "a csv provider needs spec.path or spec.source"),
        (
            {"symbols": ["A"], "source": {"configMapRef": {"name": "t", "key": "t.csv"}}},
            "spec.source is only read by a csv provider",
        ),
        (
            {"provider": "csv", "symbols": ["A"], "path": "/data/a.csv",
             "source": {"configMapRef": {"name": "t", "key": "t.csv"}}},
            "spec.path and spec.source are exclusive",
        ),
        (
            {"provider": "csv", "symbols": ["A"],
             "source": {"configMapRef": {"name": "t", "key": "t.csv"},
                        "persistentVolumeClaim": {"claimName": "c", "subPath": "t.csv"}}},
            "exactly one of configMapRef or persistentVolumeClaim",
        ),
        (
            {"provider": "csv", "symbols": ["A"], "source": {}},
            "exactly one of configMapRef or persistentVolumeClaim",
        ),
        (
            {"provider": "csv", "symbols": ["A"],
             "source": {"persistentVolumeClaim": {"claimName": "c", "subPath": "a/../../etc"}}},
            "must not have . or .. segments",
        ),
        (
            {"provider": "csv", "symbols": ["A"],
             "source": {"persistentVolumeClaim": {"claimName": "c", "subPath": "/etc/passwd"}}},
            "subPath must be a relative file path",
        ),
        (
            {"provider": "csv", "symbols": ["A"],
             "source": {"configMapRef": {"name": "t", "key": "../t.csv"}}},
            "configMapRef.key must be a file name",
        ),
        ({"symbols": ["A"], "path": "/data/a.csv"}, "spec.path is only read by a csv provider"),
        ({"symbols": ["A"], "speed": 2}, "spec.speed is only read by a csv provider"),
        (
            {"provider": "rest", "url": "https://x", "symbols": ["A"], "fieldMapping": {"q": "a"}},
            "fieldMapping keys must be canonical tick fields or items, type, type_path",
        ),
        (
            {"symbols": ["A"], "fieldMapping": {"bid": "b"}},
            "spec.fieldMapping is only read by a rest provider",
        ),
        (
            {"symbols": ["A"], "referencePrices": {"B": "1.5"}},
            "every spec.referencePrices key must be one of spec.symbols (not listed: B)",
        ),
    ],
)  # fmt: skip
def test_marketfeed_the_operator_cannot_act_on_is_refused_with_a_reason(cfg, spec, message):
    with pytest.raises(common.InvalidSpec) as raised:
        marketfeed.build(make_cr("MarketFeed", spec), cfg)
    assert message in str(raised.value)


def test_marketfeed_name_too_long_for_its_children_is_refused(cfg):
    with pytest.raises(common.InvalidSpec, match="at most 40 characters"):
        marketfeed.build(make_cr("MarketFeed", {"symbols": ["A"]}, name="f" * 41), cfg)


@pytest.mark.parametrize(
    "extra",
    [
        {"provider": "csv", "path": "/data/ticks.csv", "speed": 10},
        {
            "provider": "rest",
            "url": "https://vendor.example/quotes",
            "pollIntervalSeconds": 2,
            "fieldMapping": {"items": "data", "symbol": "sym", "bid": "quote.bid"},
        },
    ],
)
def test_provider_fields_reach_the_feed_config_the_worker_reads(cfg, extra):
    spec = {"symbols": ["AAPL"], "referencePrices": {"AAPL": "189.84"}, **extra}
    (config_map,) = by_kind(marketfeed.build(make_cr("MarketFeed", spec), cfg), "ConfigMap")
    written = json.loads(config_map["data"]["feed.json"])
    assert {k: written[k] for k in spec} == spec


def _ingest_pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (ingest,) = [m for m in manifests if m["metadata"]["name"].endswith("-ingest")]
    pod: dict[str, Any] = ingest["spec"]["template"]["spec"]
    return pod


def _feed_json(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = by_kind(manifests, "ConfigMap")
    written: dict[str, Any] = json.loads(config_map["data"]["feed.json"])
    return written


CSV_SOURCES = {
    "config-map": (
        {"configMapRef": {"name": "aapl-2024-01", "key": "aapl.csv"}},
        {"configMap": {"name": "aapl-2024-01", "items": [{"key": "aapl.csv", "path": "aapl.csv"}],
                       "defaultMode": 0o444}},
        "/var/lib/starkmatter/replay/aapl.csv",
    ),
    "claim": (
        {"persistentVolumeClaim": {"claimName": "backfills", "subPath": "2024-01/aapl.csv"}},
        {"persistentVolumeClaim": {"claimName": "backfills", "readOnly": True}},
        "/var/lib/starkmatter/replay/2024-01/aapl.csv",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CSV_SOURCES))
def test_csv_source_is_mounted_read_only_in_the_ingest_pod_and_becomes_the_path(cfg, kind):
    source, volume_source, path = CSV_SOURCES[kind]
    spec = {"provider": "csv", "symbols": ["AAPL"], "speed": 5, "source": source}
    manifests = marketfeed.build(make_cr("MarketFeed", spec), cfg)
    pod = _ingest_pod(manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["replay"] == {"name": "replay", **volume_source}
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["replay"] == {
        "name": "replay",
        "mountPath": "/var/lib/starkmatter/replay",
        "readOnly": True,
    }
    # The worker reads spec.path from feed.json: the operator points it into the mount.
    assert path.startswith(mounts["replay"]["mountPath"] + "/")
    assert _feed_json(manifests)["path"] == path
    assert _feed_json(manifests)["source"] == source
    # The mount adds no write access: the pod keeps the restricted profile.
    assert container["securityContext"] == common.container_security_context()
    assert pod["securityContext"] == common.pod_security_context()
    assert pod["automountServiceAccountToken"] is False
    # Only the ingest worker replays: the gateway gets no replay volume.
    gateway = next(
        d for d in by_kind(manifests, "Deployment") if d["metadata"]["name"].endswith("-gateway")
    )
    assert "replay" not in {v["name"] for v in gateway["spec"]["template"]["spec"]["volumes"]}


def test_a_changed_csv_source_rolls_the_ingest_pod(cfg):
    key = "starkmatter.io/config-hash"

    def template_hash(source: dict[str, Any]) -> str:
        spec = {"provider": "csv", "symbols": ["AAPL"], "source": source}
        manifests = marketfeed.build(make_cr("MarketFeed", spec), cfg)
        (ingest,) = [m for m in manifests if m["metadata"]["name"] == "demo-ingest"]
        return str(ingest["spec"]["template"]["metadata"]["annotations"][key])

    first = template_hash({"configMapRef": {"name": "jan", "key": "aapl.csv"}})
    assert first != template_hash({"configMapRef": {"name": "feb", "key": "aapl.csv"}})


@pytest.mark.parametrize(
    "spec",
    [
        {"symbols": ["AAPL"]},
        {"provider": "csv", "symbols": ["AAPL"], "path": "/data/ticks.csv"},
        {"provider": "websocket", "url": "wss://x.example", "symbols": ["AAPL"]},
        {"provider": "rest", "url": "https://x.example", "symbols": ["AAPL"]},
    ],
)
def test_without_a_source_the_ingest_pod_has_only_its_scratch_and_config_volumes(cfg, spec):
    manifests = marketfeed.build(make_cr("MarketFeed", spec), cfg)
    pod = _ingest_pod(manifests)
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "config"]
    assert [m["name"] for m in pod["containers"][0]["volumeMounts"]] == ["tmp", "config"]
    assert _feed_json(manifests) == {"name": "demo", **spec}


def test_ingest_and_gateway_listen_on_the_pod_address_so_kubelet_probes_reach_them(cfg):
    for d in by_kind(marketfeed.build(sample("MarketFeed"), cfg), "Deployment"):
        (container,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["STARKMATTER_API_HOST"] == "0.0.0.0", d["metadata"]["name"]
        assert container["livenessProbe"]["httpGet"]["port"] in {
            p["name"] for p in container["ports"]
        }


def test_the_gateway_takes_the_jwt_key_from_its_environment_so_a_missing_one_is_reported(cfg):
    """A Secret the kubelet puts into the environment stops the container with
    CreateContainerConfigError naming it (what the feed's status reports); a Secret volume
    would only leave a FailedMount event that the operator cannot see."""
    body = sample("MarketFeed")
    (gateway,) = [
        d
        for d in by_kind(marketfeed.build(body, cfg), "Deployment")
        if d["metadata"]["name"] == "us-equities-gateway"
    ]
    pod = gateway["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["STARKMATTER_JWT_PUBLIC_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": cfg.jwt_secret,
        "key": cfg.jwt_public_key,
    }
    assert not [v for v in pod["volumes"] if "secret" in v]
    refs = marketfeed.required_secrets(body, cfg)
    assert (
        common.SecretKeyRef(cfg.jwt_secret, cfg.jwt_public_key, "the operator's JWT secret") in refs
    )
