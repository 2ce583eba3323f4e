"""MarketFeed -> ConfigMap, ingestion Deployment, gateway Deployment + Service (+ HPA)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from starkmatter_operator import config, validation
from starkmatter_operator.builders import common

GATEWAY_PORT = 8001
# Where a csv feed's spec.source is mounted (read-only) in the ingestion container.
REPLAY_DIR = "/var/lib/starkmatter/replay"


@dataclasses.dataclass(frozen=True)
class ReplaySource:
    """The pod-side of a csv feed's ``spec.source``: a volume, its read-only mount and the
    path of the file the worker replays."""

    volume: dict[str, Any]
    mount: dict[str, Any]
    path: str


def replay_source(spec: Mapping[str, Any]) -> ReplaySource | None:
    """The file a csv feed names in ``spec.source``, as the kubelet will mount it. The
    operator only writes references: the kubelet reads the ConfigMap or the claim, so the
    operator needs no read access to either."""
    source = spec.get("source")
    if not source or spec.get("provider") != "csv":
        return None
    mount = {"name": "replay", "mountPath": REPLAY_DIR, "readOnly": True}
    if "configMapRef" in source:
        ref = source["configMapRef"]
        key = str(ref["key"])
        volume = {
            "name": "replay",
            "configMap": {
                "name": str(ref["name"]),
                "items": [{"key": key, "path": key}],
                "defaultMode": 0o444,
            },
        }
        return ReplaySource(volume, mount, f"{REPLAY_DIR}/{key}")
    claim = source["persistentVolumeClaim"]
    volume = {
        "name": "replay",
        "persistentVolumeClaim": {"claimName": str(claim["claimName"]), "readOnly": True},
    }
    return ReplaySource(volume, mount, f"{REPLAY_DIR}/{claim['subPath']}")


def names(feed: str) -> dict[str, str]:
    return {
        "config": f"{feed}-feed",
        "ingest": f"{feed}-ingest",
        "gateway": f"{feed}-gateway",
    }


def required_secrets(body: common.Body, cfg: config.OperatorConfig) -> list[common.SecretKeyRef]:
    spec = common.spec_of(body)
    return [
        common.spec_secret_ref(spec, "databaseSecretRef", "starkmatter-database"),
        common.spec_secret_ref(spec, "redisSecretRef", "starkmatter-redis"),
        common.SecretKeyRef(cfg.jwt_secret, cfg.jwt_public_key, "the operator's JWT secret"),
        *common.credentials_refs(spec),
    ]


def build(body: common.Body, cfg: config.OperatorConfig) -> list[common.Manifest]:
    feed = common.name_of(body)
    spec = common.spec_of(body)
    problems = validation.name_problems(feed) + validation.marketfeed_problems(spec)
    if problems:
        raise common.InvalidSpec(problems)
    n = names(feed)
    replay = replay_source(spec)
    worker_spec = {**spec, "path": replay.path} if replay else spec
    feed_json = common.canonical_json({"name": feed, **worker_spec})
    template_annotations = {"starkmatter.io/config-hash": common.content_hash(feed_json)}

    # Outside dev mode every entry point (the gateway too) refuses to start without both
    # server URLs.
    shared_env: list[dict[str, Any]] = [
        common.secret_env(
            "STARKMATTER_DATABASE_URL", spec.get("databaseSecretRef") or {}, "starkmatter-database"
        ),
        common.secret_env(
            "STARKMATTER_REDIS_URL", spec.get("redisSecretRef") or {}, "starkmatter-redis"
        ),
        {"name": "STARKMATTER_FEED_CONFIG", "value": f"{common.CONFIG_DIR}/feed.json"},
    ]
    ingest_env = [
        *shared_env,
        {"name": "STARKMATTER_METRICS_PORT", "value": str(common.METRICS_PORT)},
    ]
    creds = spec.get("credentialsSecretRef")
    if creds:
        ingest_env.append(
            {
                "name": "STARKMATTER_FEED_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": creds["name"], "key": creds.get("key", "token")}
                },
            }
        )
    ingest = spec.get("ingest") or {}
    ingest_pod = common.pod_spec(
        [
            common.container(
                cfg,
                name="ingest",
                args=["ingest", "--feed", feed],
                env=ingest_env,
                resources_spec=ingest.get("resources"),
                ports=[{"name": "metrics", "containerPort": common.METRICS_PORT}],
                probes=common.http_probes("metrics"),
                mounts=[common.config_mount(), *([replay.mount] if replay else [])],
            )
        ],
        [common.config_volume(n["config"]), *([replay.volume] if replay else [])],
    )

    gateway = spec.get("gateway") or {}
    autoscaling = gateway.get("autoscaling") or {}
    hpa_enabled = bool(autoscaling.get("enabled", False))
    gateway_pod = common.pod_spec(
        [
            common.container(
                cfg,
                name="gateway",
                args=["gateway"],
                env=[
                    *shared_env,
                    # From the environment, not a volume: a missing Secret or key then
                    # stops the container with the kubelet's CreateContainerConfigError,
                    # naming it, which is what the feed's status reports (the operator
                    # cannot read Secrets); a volume would only leave a FailedMount event.
                    common.secret_env(
                        "STARKMATTER_JWT_PUBLIC_KEY",
                        {"name": cfg.jwt_secret, "key": cfg.jwt_public_key},
                        cfg.jwt_secret,
                    ),
                    # /metrics only here, apart from the port the Service exposes to clients.
                    {"name": "STARKMATTER_METRICS_PORT", "value": str(common.METRICS_PORT)},
                ],
                resources_spec=gateway.get("resources"),
                ports=[
                    {"name": "http", "containerPort": GATEWAY_PORT},
                    {"name": "metrics", "containerPort": common.METRICS_PORT},
                ],
                probes=common.http_probes("http"),
                mounts=[common.config_mount()],
            )
        ],
        [common.config_volume(n["config"])],
    )

    manifests = [
        common.config_map(body, n["config"], "feed-config", "feed.json", feed_json),
        common.deployment(
            body,
            name=n["ingest"],
            component="ingest",
            replicas=int(ingest.get("replicas", 1)),
            pod=ingest_pod,
            template_annotations=template_annotations,
            # Two workers on one provider connection would store every tick twice.
            strategy="Recreate",
        ),
        common.deployment(
            body,
            name=n["gateway"],
            component="gateway",
            replicas=None if hpa_enabled else int(gateway.get("replicas", 2)),
            pod=gateway_pod,
            template_annotations=template_annotations,
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": common.metadata(body, n["gateway"], "gateway"),
            "spec": {
                "type": "ClusterIP",
                "selector": common.selector(body, "gateway"),
                "ports": [
                    {
                        "name": "http",
                        "port": int(gateway.get("port", GATEWAY_PORT)),
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        },
    ]
    if hpa_enabled:
        manifests.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": common.metadata(body, n["gateway"], "gateway"),
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": n["gateway"],
                    },
                    "minReplicas": int(autoscaling.get("minReplicas", 2)),
                    "maxReplicas": int(autoscaling.get("maxReplicas", 10)),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": int(
                                        autoscaling.get("targetCPUUtilizationPercentage", 70)
                                    ),
                                },
                            },
                        }
                    ],
                },
            }
        )
    return manifests
