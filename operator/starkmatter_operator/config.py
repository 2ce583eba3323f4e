"""Operator settings, read once from the environment (the chart sets them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

GROUP = "starkmatter.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "starkmatter-operator"
MANAGED_BY = "starkmatter-operator"


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """What the operator needs to know about the installation it belongs to."""

    # The one platform image that every child workload runs (entry point chosen by args).
    image: str = "starkmatter/starkmatter:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Secret (in each CR's namespace) with the PEM public key that gateways verify JWTs with.
    jwt_secret: str = "starkmatter-jwt"  # noqa: S105 (a Secret name, not a secret)
    jwt_public_key: str = "public.pem"
    # Where AlertRules are delivered: one ConfigMap read by the alert evaluator.
    alerts_namespace: str = "starkmatter"
    alerts_configmap: str = "starkmatter-alert-rules"
    # Optional: the alert evaluator's metrics, to report whether each AlertRule fires.
    alerts_metrics_url: str | None = None
    # Optional: read feed heartbeats (ticks/s, last tick) for MarketFeed status.
    redis_url: str | None = None
    # Seconds between status refreshes from heartbeats and CronJob history.
    status_interval_s: float = 30.0
    metrics_port: int = 9090
    # Seconds a burst of child events for one owner is collapsed into one reconcile (under
    # load, an owner waiting for a reconcile slot keeps collapsing events beyond this).
    debounce_s: float = 0.05
    # Seconds a "does the apiserver serve this kind" answer is trusted (PrometheusRule).
    discovery_ttl_s: float = 60.0
    # Concurrent HTTP connections to the apiserver.
    api_connections: int = 32
    # Reconciles in flight at once (each applies its children in parallel): enough to keep
    # the connections busy; more would only hold more in memory.
    reconcile_concurrency: int = 16
    # Kopf peering between replicas (None: standalone) and this replica's priority.
    peering: str | None = None
    priority: int = 0
    # Seconds a replica's peering record stays valid without a keep-alive: how long a
    # standby waits before it takes over from an active replica that died without notice.
    peering_lifetime_s: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: str) -> str:
            return env.get(f"STARKMATTER_OPERATOR_{name}", default)

        return cls(
            image=get("IMAGE", defaults.image),
            image_pull_policy=get("IMAGE_PULL_POLICY", defaults.image_pull_policy),
            jwt_secret=get("JWT_SECRET", defaults.jwt_secret),
            jwt_public_key=get("JWT_PUBLIC_KEY", defaults.jwt_public_key),
            alerts_namespace=get("ALERTS_NAMESPACE", defaults.alerts_namespace),
            alerts_configmap=get("ALERTS_CONFIGMAP", defaults.alerts_configmap),
            redis_url=get("REDIS_URL", "") or None,
            alerts_metrics_url=get("ALERTS_METRICS_URL", "") or None,
            status_interval_s=float(get("STATUS_INTERVAL", str(defaults.status_interval_s))),
            metrics_port=int(get("METRICS_PORT", str(defaults.metrics_port))),
            debounce_s=float(get("DEBOUNCE", str(defaults.debounce_s))),
            api_connections=int(get("API_CONNECTIONS", str(defaults.api_connections))),
            reconcile_concurrency=int(
                get("RECONCILE_CONCURRENCY", str(defaults.reconcile_concurrency))
            ),
            discovery_ttl_s=float(get("DISCOVERY_TTL", str(defaults.discovery_ttl_s))),
            peering=get("PEERING_NAME", "") or None,
            priority=int(get("PRIORITY", "0")),
            peering_lifetime_s=int(get("PEERING_LIFETIME", str(defaults.peering_lifetime_s))),
        )
