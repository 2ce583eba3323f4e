"""Operational alert rules (AlertRule resources) and their evaluation with hysteresis. Pure.

A rule fires when its condition has held for ``for``; it resolves when the condition has
been clear for ``clear_for``, where *clear* uses a band below the threshold (hysteresis), so
a value hovering at the threshold does not flap. Each transition yields one event whose
fingerprint names the episode, so re-evaluating or restarting never repeats it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import re
from pathlib import Path
from typing import Literal

import pydantic

Condition = Literal[
    "DataIngestionStopped", "HighLatency", "CacheFailure", "DataQualityIssue",
    "PriceAbove", "PriceBelow",
]  # fmt: skip
Severity = Literal["info", "warning", "critical"]
CLEAR_BAND = decimal.Decimal("0.9")
"""A firing threshold rule clears only below 90% of its threshold (above 110% for PriceBelow)."""
DEFAULT_QUALITY_PERCENT = decimal.Decimal(5)

_DURATION = re.compile(r"^(\d+)(s|m|h)$")


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration like 30s, 5m or 1h: {text!r}")
    return dt.timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]])


class AlertRule(pydantic.BaseModel):
    """The ``spec`` of an AlertRule, plus its name."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str
    condition: Condition
    feed: str | None = None
    symbol: str | None = None
    threshold: decimal.Decimal | None = None
    for_: str = pydantic.Field(default="5m", alias="for")
    severity: Severity = "warning"
    enabled: bool = True
    summary: str = ""

    @pydantic.field_validator("for_")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @pydantic.model_validator(mode="after")
    def _needs(self) -> AlertRule:
        if self.condition in ("DataIngestionStopped", "DataQualityIssue") and not self.feed:
            raise ValueError(f"{self.condition} needs spec.feed")
        if self.condition in ("PriceAbove", "PriceBelow") and not self.symbol:
            raise ValueError(f"{self.condition} needs spec.symbol")
        if self.condition in ("HighLatency", "PriceAbove", "PriceBelow") and not self.threshold:
            raise ValueError(f"{self.condition} needs spec.threshold")
        return self

    @property
    def hold(self) -> dt.timedelta:
        return parse_duration(self.for_)

    @property
    def clear_for(self) -> dt.timedelta:
        # Resolving is quicker than firing, but never instant: one minute at most.
        return min(self.hold, dt.timedelta(minutes=1))


def load_dir(path: Path) -> tuple[list[AlertRule], list[str]]:
    """Every ``*.json`` AlertRule in ``path`` (a resource or a bare spec); and the errors."""
    rules, problems = [], []
    for file in sorted(path.glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            spec = data.get("spec", data)
            name = data.get("metadata", {}).get("name") or file.stem
            rules.append(AlertRule.model_validate({**spec, "name": name}))
        except (OSError, ValueError) as exc:
            problems.append(f"{file.name}: {exc}")
    return rules, problems


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the evaluator measured for one rule; ``value`` None means it could not tell."""

    value: decimal.Decimal | None
    breached: bool
    clear: bool
    """Below the clear band: only a clear observation counts toward resolving."""


def observe(rule: AlertRule, value: decimal.Decimal | None) -> Observation:
    """Breach and clear for the rule's condition. For DataIngestionStopped the value is the
    age in seconds of the feed's last tick, or of its worker's last heartbeat once a replay
    has finished (None: no heartbeat at all); for CacheFailure 1 = unreachable."""
    hold_s = decimal.Decimal(int(rule.hold.total_seconds()))
    if rule.condition == "DataIngestionStopped":
        if value is None:
            return Observation(None, True, False)
        return Observation(value, value > hold_s, value <= hold_s)
    if rule.condition == "CacheFailure":
        down = value is None or value > 0
        return Observation(value, down, not down)
    if value is None:
        # Unknown is neither a breach nor a recovery: the state stays as it is.
        return Observation(None, False, False)
    if rule.condition == "DataQualityIssue":
        limit = rule.threshold or DEFAULT_QUALITY_PERCENT
        return Observation(value, value > limit, value <= limit * decimal.Decimal("0.8"))
    assert rule.threshold is not None
    if rule.condition == "PriceBelow":
        return Observation(value, value < rule.threshold, value >= rule.threshold / CLEAR_BAND)
    return Observation(value, value > rule.threshold, value <= rule.threshold * CLEAR_BAND)


State = Literal["ok", "pending", "firing"]


@dataclasses.dataclass(frozen=True)
class RuleState:
    state: State
    since: dt.datetime
    """When the current state (or, while firing, the clearing streak) began."""
    clearing_since: dt.datetime | None = None
    fired_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Transition:
    state: Literal["firing", "resolved"]
    fingerprint: str
    at: dt.datetime


def step(
    rule: AlertRule, current: RuleState, seen: Observation, now: dt.datetime
) -> tuple[RuleState, Transition | None]:
    """Advance one evaluation. ``for`` applies to firing, ``clear_for`` to resolving."""
    if not rule.enabled:
        # Switching off a firing rule ends its episode: whoever was told it fired is told
        # it is over, rather than left with an alert that never resolves.
        if current.state == "firing" and current.fired_at is not None:
            return RuleState("ok", now), resolution(rule.name, current.fired_at, now)
        return RuleState("ok", now), None
    if current.state == "ok":
        if not seen.breached:
            return current, None
        current = RuleState("pending", now)
    if current.state == "pending":
        if not seen.breached:
            return RuleState("ok", now), None
        if now - current.since >= rule.hold or (
            rule.condition == "DataIngestionStopped"
        ):  # the heartbeat's age already measured the hold
            fired = RuleState("firing", now, None, now)
            return fired, Transition("firing", f"op:{rule.name}:{now.isoformat()}:firing", now)
        return current, None
    # firing
    assert current.fired_at is not None
    if seen.breached or not seen.clear:
        return dataclasses.replace(current, clearing_since=None), None
    clearing = current.clearing_since or now
    if now - clearing >= rule.clear_for:
        return RuleState("ok", now), resolution(rule.name, current.fired_at, now)
    return dataclasses.replace(current, clearing_since=clearing), None


def resolution(name: str, fired_at: dt.datetime, now: dt.datetime) -> Transition:
    """The end of the episode that fired at ``fired_at``: one fingerprint however it ends
    (cleared, disabled, or its rule deleted)."""
    return Transition("resolved", f"op:{name}:{fired_at.isoformat()}:resolved", now)


def p99_from_buckets(
    before: dict[float, float], after: dict[float, float]
) -> decimal.Decimal | None:
    """p99 in ms from two scrapes of a cumulative histogram (``le`` seconds -> count).

    Uses the increase between scrapes (the recent window), and returns the upper bound of
    the bucket holding the 99th percentile (Prometheus' own estimate uses interpolation;
    the bound is the conservative choice for alerting). None when nothing was observed.
    """
    bounds = sorted(after)
    increase = [(b, after[b] - before.get(b, 0.0)) for b in bounds]
    total = increase[-1][1] if increase else 0.0
    if total <= 0:
        return None
    rank = 0.99 * total
    for bound, count in increase:
        if count >= rank:
            if bound == float("inf"):
                finite = [b for b in bounds if b != float("inf")]
                bound = finite[-1] * 2 if finite else 60.0
            return decimal.Decimal(repr(bound * 1000)).quantize(decimal.Decimal("0.001"))
    return None
