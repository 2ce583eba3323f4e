"""Prometheus metrics of the gateway."""

from __future__ import annotations

import prometheus_client

CONNECTIONS = prometheus_client.Gauge(
    "starkmatter_gateway_connections", "Open client connections, by transport.", ["transport"]
)
SUBSCRIPTIONS = prometheus_client.Gauge(
    "starkmatter_gateway_subscriptions", "Client subscriptions held (client x topic)."
)
REDIS_TOPICS = prometheus_client.Gauge(
    "starkmatter_gateway_redis_topics", "Redis channels this replica is subscribed to."
)
FRAMES_SENT = prometheus_client.Counter(
    "starkmatter_gateway_frames_sent_total",
    "Frames fanned out to clients (updates, snapshots, errors, heartbeats); a conflated "
    "update counts here and in frames_conflated_total.",
)
FRAMES_CONFLATED = prometheus_client.Counter(
    "starkmatter_gateway_frames_conflated_total",
    "Market-data frames replaced by a newer one for a slow client before being sent.",
)
FRAMES_DROPPED = prometheus_client.Counter(
    "starkmatter_gateway_frames_dropped_total",
    "Frames never sent because their client was disconnected for lagging.",
)
DISCONNECTS = prometheus_client.Counter(
    "starkmatter_gateway_disconnects_total",
    "Connections closed by the server, by reason.",
    ["reason"],
)
REFUSALS = prometheus_client.Counter(
    "starkmatter_gateway_refusals_total", "Error frames sent to clients, by code.", ["code"]
)
REDIS_RECONNECTS = prometheus_client.Counter(
    "starkmatter_gateway_redis_reconnects_total",
    "Times the Redis pub/sub subscriber reconnected and resubscribed after losing its "
    "connection (each followed by fresh snapshots to every client).",
)
SSE_RESUMES = prometheus_client.Counter(
    "starkmatter_gateway_sse_resumes_total",
    "SSE topics resumed from a Last-Event-ID, by outcome: replay (missed updates sent) or "
    "snapshot (a fresh snapshot instead).",
    ["outcome"],
)
