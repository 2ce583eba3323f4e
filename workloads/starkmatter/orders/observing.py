"""Prometheus metrics of the order service (served on /metrics by the API and the worker)."""

from __future__ import annotations

import prometheus_client

ORDERS_PLACED = prometheus_client.Counter(
    "starkmatter_orders_placed_total",
    "Orders received, by outcome: accepted, or the rejection reason code.",
    ["outcome"],
)
OUTBOX_EVENTS = prometheus_client.Counter(
    "starkmatter_orders_outbox_events_total",
    "Outbox events handled by the order worker, by topic and result (ok, failed).",
    ["topic", "result"],
)
BATCH_SECONDS = prometheus_client.Histogram(
    "starkmatter_orders_batch_duration_seconds",
    "Time to handle one outbox batch, broker calls and commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EXECUTIONS = prometheus_client.Counter(
    "starkmatter_orders_executions_total", "Executions applied to orders and positions."
)
OUTBOX_LAG_SECONDS = prometheus_client.Gauge(
    "starkmatter_orders_outbox_lag_seconds",
    "Age of the oldest outbox event in the last batch taken (0 when the outbox is empty).",
)
PLACEMENT_RETRIES = prometheus_client.Counter(
    "starkmatter_orders_placement_retries_total",
    "Optimistic acceptances the write refused (an account limit, the kill switch or the"
    " instrument no longer allowed them), decided again under the account lock.",
)
PLACEMENT_GROUP_ORDERS = prometheus_client.Histogram(
    "starkmatter_orders_placement_group_orders",
    "Orders placed together in one statement and one transaction (group placement).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
ORDERS_REFUSED_BY_DATABASE = prometheus_client.Counter(
    "starkmatter_orders_refused_by_database_total",
    "Re-matching passes in which the database refused one order's change (a broker fill"
    " beyond what the order reserved, say): that order is left as it was and retried, the"
    " others go on. Any increase needs a look.",
)
