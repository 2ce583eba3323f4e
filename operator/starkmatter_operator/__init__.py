"""The StarkMatter operator: turns MarketFeed, NewsSource, RetentionPolicy and AlertRule
custom resources into running workloads.

Layers: ``builders`` (pure, CR dict -> child manifests) and ``validation``/``conditions``
(pure) are at the bottom; ``kube``, ``heartbeat`` and ``metrics`` do I/O; ``reconciling``
ties them together; ``handlers`` are the thin Kopf registrations.
"""
