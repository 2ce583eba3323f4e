"""Checks the operator makes before acting on a CR.

The apiserver's schema and CEL rules already refuse most bad input; these checks are the
same rules (and a few a regex cannot express, like cron field ranges) applied again, so a
CRD installed without its rules, or an older apiserver, still never produces broken
children. Each function returns human-readable problems, empty when the spec is fine.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (field name, lowest, highest, names that stand for numbers)
_CRON_FIELDS: list[tuple[str, int, int, dict[str, int]]] = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
]
SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-]*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40
# What the ingest worker's REST poller understands (its canonical tick fields + layout keys).
FIELD_MAPPING_KEYS = frozenset(
    {"items", "type", "type_path", "symbol", "ts", "price", "size", "trade_id", "bid", "ask",
     "bid_size", "ask_size", "open", "high", "low", "close", "volume", "vwap", "interval", "seq"}
)  # fmt: skip


def cron_problems(schedule: str, field: str = "spec.schedule") -> list[str]:
    text = schedule.strip()
    if text in CRON_MACROS:
        return []
    parts = text.split()
    if len(parts) != len(_CRON_FIELDS):
        return [f"{field} {schedule!r} must have 5 fields, not {len(parts)}"]
    problems = []
    for part, (what, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            if not _cron_item_ok(item, low, high, names):
                problems.append(
                    f"{field} {schedule!r}: {what} {item!r} is not a value from {low} to {high}"
                )
    return problems


def _cron_item_ok(item: str, low: int, high: int, names: dict[str, int]) -> bool:
    base, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return False
    if base in ("*", "?"):
        return True
    first, _, last = base.partition("-")
    values = []
    for token in (first, last) if last else (first,):
        value = names.get(token.upper()) if token.isalpha() else None
        if value is None:
            if not token.isdigit():
                return False
            value = int(token)
        values.append(value)
    return all(low <= v <= high for v in values) and values == sorted(values)


def name_problems(name: str) -> list[str]:
    if len(name) > MAX_NAME or not DNS_LABEL.match(name):
        return [
            f"metadata.name {name!r} must be a DNS label of at most {MAX_NAME} characters "
            "that starts with a letter"
        ]
    return []


def marketfeed_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = []
    symbols = list(spec.get("symbols") or [])
    if not symbols:
        problems.append("spec.symbols must list at least one symbol")
    if any(not isinstance(s, str) or not s.strip() for s in symbols):
        problems.append("symbols must not be empty")
    bad = [s for s in symbols if isinstance(s, str) and s.strip() and not SYMBOL.match(s)]
    if bad:
        problems.append(f"spec.symbols has malformed symbols: {', '.join(map(str, bad))}")
    duplicates = sorted(str(s) for s, n in collections.Counter(symbols).items() if n > 1)
    if duplicates:
        problems.append(f"symbols must be unique (repeated: {', '.join(duplicates)})")
    provider = spec.get("provider", "simulator")
    url = spec.get("url")
    if provider in ("websocket", "rest") and not url:
        problems.append("spec.url is required for a websocket or rest provider")
    if provider == "csv" and not spec.get("path") and not spec.get("source"):
        problems.append("a csv provider needs spec.path or spec.source (the file to replay)")
    for field, reader in (
        ("path", "csv"), ("source", "csv"), ("speed", "csv"), ("fieldMapping", "rest")
    ):  # fmt: skip
        if field in spec and provider != reader:
            problems.append(f"spec.{field} is only read by a {reader} provider")
    if "source" in spec:
        problems += _replay_source_problems(spec)
    mapping = spec.get("fieldMapping") or {}
    unknown = sorted(set(mapping) - FIELD_MAPPING_KEYS)
    if unknown:
        problems.append(
            "fieldMapping keys must be canonical tick fields or items, type, type_path "
            f"(unknown: {', '.join(map(str, unknown))})"
        )
    strangers = sorted(set(spec.get("referencePrices") or {}) - set(symbols))
    if strangers:
        problems.append(
            "every spec.referencePrices key must be one of spec.symbols "
            f"(not listed: {', '.join(map(str, strangers))})"
        )
    if url and provider == "websocket" and not str(url).startswith(("ws://", "wss://")):
        problems.append("a websocket provider needs a ws:// or wss:// url")
    if url and provider == "rest" and not str(url).startswith(("http://", "https://")):
        problems.append("a rest provider needs an http:// or https:// url")
    autoscaling = (spec.get("gateway") or {}).get("autoscaling") or {}
    if autoscaling.get("minReplicas", 2) > autoscaling.get("maxReplicas", 10):
        problems.append("gateway.autoscaling.minReplicas must not exceed maxReplicas")
    return problems


_CONFIG_MAP_KEY = re.compile(r"^[-_a-zA-Z0-9][-._a-zA-Z0-9]*$")


def _replay_source_problems(spec: Mapping[str, Any]) -> list[str]:
    """A csv feed's spec.source: one kind of source, and a file that stays inside the
    mount (the path the worker reads is built from these names)."""
    problems = []
    if "path" in spec:
        problems.append(
            "spec.path and spec.source are exclusive: with a source the operator mounts the "
            "file and sets the path"
        )
    source = spec.get("source") or {}
    config_map = source.get("configMapRef")
    claim = source.get("persistentVolumeClaim")
    if (config_map is None) == (claim is None):
        return [
            *problems,
            "spec.source needs exactly one of configMapRef or persistentVolumeClaim",
        ]
    if config_map is not None:
        if not config_map.get("name"):
            problems.append("spec.source.configMapRef.name is required")
        if not _CONFIG_MAP_KEY.match(str(config_map.get("key") or "")):
            problems.append(
                "spec.source.configMapRef.key must be a file name (letters, digits, -, _, .; "
                "not starting with .)"
            )
    elif claim is not None:
        if not claim.get("claimName"):
            problems.append("spec.source.persistentVolumeClaim.claimName is required")
        sub_path = str(claim.get("subPath") or "")
        segments = sub_path.split("/")
        if not sub_path or sub_path.startswith("/") or sub_path.endswith("/"):
            problems.append(
                "spec.source.persistentVolumeClaim.subPath must be a relative file path"
            )
        elif any(s in (".", "..") for s in segments):
            problems.append("persistentVolumeClaim.subPath must not have . or .. segments")
    return problems


def newssource_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = []
    mode = spec.get("mode", "polling")
    fmt = spec.get("format", "rss")
    url = str(spec.get("url") or "")
    if not url:
        problems.append("spec.url is required")
    if mode == "streaming" and fmt not in ("sse", "websocket", "json"):
        problems.append("a streaming source needs format sse, websocket or json")
    if mode == "polling" and fmt not in ("rss", "atom", "json"):
        problems.append("a polling source needs format rss, atom or json")
    if fmt == "websocket" and url and not url.startswith(("ws://", "wss://")):
        problems.append("a websocket source needs a ws:// or wss:// url")
    if fmt != "websocket" and url and not url.startswith(("http://", "https://")):
        problems.append("this format needs an http:// or https:// url")
    if mode == "polling":
        problems += cron_problems(str(spec.get("schedule", "*/5 * * * *")))
    return problems


def retentionpolicy_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = cron_problems(str(spec.get("schedule", "0 3 * * *")))
    rules = list(spec.get("rules") or [])
    if not rules:
        problems.append("spec.rules must have at least one rule")
    datasets = [r.get("dataset") for r in rules]
    repeated = sorted({str(d) for d in datasets if datasets.count(d) > 1})
    if repeated:
        problems.append(
            f"each dataset may appear in only one rule (repeated: {', '.join(repeated)})"
        )
    if any(r.get("action", "archive") != "delete" for r in rules) and not spec.get("archive"):
        problems.append(
            "spec.archive is required when any rule archives (action archive or archiveThenDelete)"
        )
    if any(r.get("dataset") == "audit" and r.get("action", "archive") != "archive" for r in rules):
        problems.append("the audit trail is append-only: its rule must use action archive")
    archive_url = str((spec.get("archive") or {}).get("url", ""))
    if archive_url.startswith("file://") and any(
        r.get("action", "archive") == "archiveThenDelete" for r in rules
    ):
        # In a cluster, file:// is the archive job's scratch volume, gone with its pod: the
        # rows would be deleted with their only archived copy.
        problems.append(
            "a file:// archive lives only as long as the archive job's pod: a rule that "
            "deletes what it archived (archiveThenDelete) needs an s3:// archive"
        )
    return problems


_THRESHOLD_RANGES: dict[str, tuple[Decimal, Decimal, str]] = {
    "DataQualityIssue": (
        Decimal(0),
        Decimal(100),
        "an error rate in percent: above 0 and at most 100",
    ),
    "HighLatency": (
        Decimal(1) - Decimal("1e-9"),
        Decimal(600000),
        "a p99 latency in milliseconds: from 1 to 600000",
    ),
}


def alertrule_problems(spec: Mapping[str, Any]) -> list[str]:
    problems = []
    condition = spec.get("condition")
    if condition in ("DataIngestionStopped", "DataQualityIssue") and not spec.get("feed"):
        problems.append("spec.feed is required for DataIngestionStopped and DataQualityIssue")
    if condition in ("PriceAbove", "PriceBelow") and not spec.get("symbol"):
        problems.append("spec.symbol is required for PriceAbove and PriceBelow")
    raw = spec.get("threshold")
    if condition not in ("DataIngestionStopped", "CacheFailure") and raw is None:
        problems.append("spec.threshold is required for this condition")
    if raw is None:
        return problems
    try:
        threshold = Decimal(str(raw))
    except InvalidOperation:
        return [*problems, f"spec.threshold {raw!r} is not a decimal number"]
    if condition in _THRESHOLD_RANGES:
        low, high, meaning = _THRESHOLD_RANGES[str(condition)]
        if not (low < threshold <= high):
            problems.append(f"spec.threshold of {condition} is {meaning}")
    if condition in ("PriceAbove", "PriceBelow") and threshold <= 0:
        problems.append("spec.threshold of a price alert must be above 0")
    return problems
