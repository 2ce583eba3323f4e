"""The StarkMatter operator: turns MarketFeed, NewsSource, RetentionPolicy and AlertRule
custom resources into running workloads.

Layers, bottom up: ``builders``, ``validation``, ``conditions`` and ``replays`` are pure
(CR dict or heartbeat in, manifests or conditions out); ``kube``, ``heartbeat``,
``evaluator``, ``reports`` and ``peering`` talk to the outside; ``state`` holds what the
process remembers; ``reconciling`` and ``reporting`` bring one CR in line and describe it;
``debouncing`` and ``refreshing`` decide when; ``handlers`` are the thin Kopf registrations.
"""
