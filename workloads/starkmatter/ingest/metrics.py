"""Prometheus metrics of the ingest worker."""

from __future__ import annotations

import prometheus_client

TICKS = prometheus_client.Counter(
    "starkmatter_ingest_events_total",
    "Events accepted and processed, by feed and kind (trade, quote, depth, bar).",
    ["feed", "kind"],
)
REJECTED = prometheus_client.Counter(
    "starkmatter_ingest_rejected_total",
    "Events refused by validation, or rows PostgreSQL refused (reason storage_refused), all "
    "written to market_rejections, by feed and reason.",
    ["feed", "reason"],
)
LATENCY = prometheus_client.Histogram(
    "starkmatter_ingest_latency_seconds",
    "Provider timestamp to Redis publish, per event.",
    ["feed"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
QUEUE_DEPTH = prometheus_client.Gauge(
    "starkmatter_ingest_queue_depth",
    "Batches waiting, by feed and stage (incoming: provider -> pipeline; store: -> PostgreSQL).",
    ["feed", "stage"],
)
ROWS_STORED = prometheus_client.Counter(
    "starkmatter_ingest_rows_written_total",
    "Rows handed to PostgreSQL, by feed and table.",
    ["feed", "table"],
)
STORE_RETRIES = prometheus_client.Counter(
    "starkmatter_ingest_store_retries_total",
    "Batch writes that failed in a way a retry may cure (connection, server state or resources, "
    "a day partition retention dropped, a table refusing every row alike: not the rows) and "
    "were retried, by feed: rising while rows_written stays flat is a storage outage.",
    ["feed"],
)
DEDUPLICATED_BATCHES = prometheus_client.Counter(
    "starkmatter_ingest_deduplicated_batches_total",
    "COPY batches that collided with stored rows and were de-duplicated (replays).",
    ["feed", "table"],
)
RECONNECTS = prometheus_client.Counter(
    "starkmatter_ingest_reconnects_total",
    "Provider sessions that ended and were retried, by feed and cause.",
    ["feed", "cause"],
)
SEQUENCE_GAPS = prometheus_client.Counter(
    "starkmatter_ingest_sequence_gap_messages_total",
    "Messages missing from a provider's sequence numbers (after resume), by feed.",
    ["feed"],
)
STREAM_GAP_SECONDS = prometheus_client.Histogram(
    "starkmatter_ingest_stream_gap_seconds",
    "Outages of a provider stream that had been delivering: from the disconnect to the next "
    "session's subscription. For streams without sequence numbers (Alpaca, REST) this is how "
    "a gap shows, and the window a backfill must cover.",
    ["feed"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CONNECTED = prometheus_client.Gauge(
    "starkmatter_ingest_provider_connected",
    "1 while the provider session is up.",
    ["feed"],
)
READ_BACK = prometheus_client.Counter(
    "starkmatter_ingest_trades_read_back_total",
    "Stored trades re-read at start-up into the bars a predecessor had not stored (non-zero "
    "after a kill: SIGKILL, OOM, node loss), by feed.",
    ["feed"],
)
RESENT = prometheus_client.Counter(
    "starkmatter_ingest_resent_trades_total",
    "Trades a provider sent again after a restart that were already stored: skipped, by feed.",
    ["feed"],
)
LATE_BARS_REBUILT = prometheus_client.Counter(
    "starkmatter_ingest_late_bars_rebuilt_total",
    "Closed bars rebuilt from storage because a trade for them arrived late, by feed.",
    ["feed"],
)
REPLAY_FINISHED = prometheus_client.Gauge(
    "starkmatter_ingest_replay_finished_timestamp_seconds",
    "When a finite source (a csv replay) was fully stored, by feed; absent while it runs. The "
    "worker then stays up idle instead of exiting (a restart would replay the file again).",
    ["feed"],
)
