"""The WebSocket and SSE gateway: authenticated subscriptions to Redis pub/sub topics."""
