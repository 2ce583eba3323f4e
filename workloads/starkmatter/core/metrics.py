"""Prometheus metrics shared by every service (component metrics live with the component)."""

from __future__ import annotations

import prometheus_client

HTTP_REQUEST_SECONDS = prometheus_client.Histogram(
    "starkmatter_http_request_duration_seconds",
    "HTTP request latency by route template (not raw path: bounded cardinality).",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HTTP_ERRORS = prometheus_client.Counter(
    "starkmatter_http_errors_total",
    "HTTP responses with an error status, by route and error code.",
    ["route", "code"],
)
DB_QUERY_SECONDS = prometheus_client.Histogram(
    "starkmatter_db_query_duration_seconds",
    "PostgreSQL query time as seen by the client.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DB_ERRORS = prometheus_client.Counter(
    "starkmatter_db_errors_total", "PostgreSQL queries that raised an error."
)
CACHE_REQUESTS = prometheus_client.Counter(
    "starkmatter_cache_requests_total",
    "Cache look-ups by cache name and result (hit or miss); the hit ratio is hit / all.",
    ["cache", "result"],
)
AUTH_EVENTS = prometheus_client.Counter(
    "starkmatter_auth_events_total",
    "Authentication outcomes (login_ok, login_failed, locked, refresh_reuse, ...).",
    ["event"],
)


def cache_result(cache: str, *, hit: bool) -> None:
    CACHE_REQUESTS.labels(cache=cache, result="hit" if hit else "miss").inc()


def exposition() -> tuple[bytes, str]:
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
