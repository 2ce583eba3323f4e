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


def serve(port: int) -> None:
    prometheus_client.start_http_server(port)
