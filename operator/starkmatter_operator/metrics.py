"""Prometheus metrics of the operator itself."""

from __future__ import annotations

import prometheus_client

RECONCILES = prometheus_client.Counter(
    "starkmatter_operator_reconciles_total",
    "Reconciles, by CR kind, what triggered them and how they ended.",
    ["kind", "trigger", "outcome"],
)
DURATION = prometheus_client.Histogram(
    "starkmatter_operator_reconcile_duration_seconds",
    "Time to reconcile one CR, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = prometheus_client.Counter(
    "starkmatter_operator_reconcile_errors_total",
    "Reconciles that could not complete, by kind and reason.",
    ["kind", "reason"],
)
CHILD_WRITES = prometheus_client.Counter(
    "starkmatter_operator_child_changes_total",
    "Children created, updated or restored after drift, by child kind.",
    ["child_kind", "change"],
)

API_REQUESTS = prometheus_client.Counter(
    "starkmatter_operator_api_requests_total",
    "Requests the operator's own client made to the apiserver (Kopf's watches and Events "
    "not included), by HTTP method and resource (with subresource).",
    ["method", "resource"],
)
EVENTS = prometheus_client.Counter(
    "starkmatter_operator_events_total",
    "Kubernetes Events the operator posted about its custom resources, by type and reason.",
    ["type", "reason"],
)


def resource_of(path: str) -> str:
    """`/apis/apps/v1/namespaces/ns/deployments/x/status` -> `deployments/status`."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces")
        rest = parts[i + 2 :] if len(parts) > i + 2 else ["namespaces"]
    else:
        start = 2 if parts[:1] == ["api"] else 3
        rest = parts[start:]
    if not rest:
        return "discovery"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


def serve(port: int) -> None:
    prometheus_client.start_http_server(port)
