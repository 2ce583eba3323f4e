"""Reads which alert rules are firing from the alert evaluator's own metrics
(``starkmatter_alerts_firing{rule,severity}``), the state it already publishes."""

from __future__ import annotations

import logging
import time

import aiohttp
from prometheus_client import parser

log = logging.getLogger(__name__)
METRIC = "starkmatter_alerts_firing"


def firing_rules(text: str) -> dict[str, bool]:
    states: dict[str, bool] = {}
    for family in parser.text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            rule = sample.labels.get("rule")
            if rule:
                states[rule] = states.get(rule, False) or sample.value >= 1
    return states


class Scraper:
    """One scrape serves every AlertRule for a few seconds; failures are never fatal."""

    def __init__(self, url: str, ttl_s: float = 5.0) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._cached: tuple[float, dict[str, bool] | None] | None = None

    async def firing(self) -> dict[str, bool] | None:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._ttl_s:
            return self._cached[1]
        states: dict[str, bool] | None
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._url) as answer,
            ):
                answer.raise_for_status()
                states = firing_rules(await answer.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("event=alerts_metrics.unreadable error=%s", type(e).__name__)
            states = None
        self._cached = (now, states)
        return states
