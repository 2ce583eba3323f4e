"""A generic REST poller: GET a JSON document every interval, map its fields to canonical.

The mapping names, for each canonical key, a dotted path into one item (``"bid":
"quote.bidPrice"``); ``items`` is the dotted path of the list of items in the document
(empty: the document is the list, or a single item); ``type`` is a constant
(``quote`` by default) unless ``type_path`` names a field. An item unchanged since the
previous poll is not re-emitted: polling the same state is not a duplicate message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from starkmatter.ingest.providers import base

_CANONICAL = (
    "symbol", "ts", "price", "size", "trade_id", "bid", "ask", "bid_size", "ask_size",
    "open", "high", "low", "close", "volume", "vwap", "interval", "seq",
)  # fmt: skip


def _get(document: Any, path: str) -> Any:
    value = document
    for part in path.split(".") if path else ():
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    fields: dict[str, str]
    items: str = ""
    type: str = "quote"
    type_path: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, str]) -> FieldMapping:
        spec = dict(spec)
        items = spec.pop("items", "")
        kind = spec.pop("type", "quote")
        type_path = spec.pop("type_path", None)
        unknown = set(spec) - set(_CANONICAL)
        if unknown:
            raise base.FatalProviderError(f"fieldMapping has unknown keys: {sorted(unknown)}")
        return cls(spec or {k: k for k in _CANONICAL}, items, kind, type_path)

    def extract(self, document: Any) -> list[Any]:
        found = _get(document, self.items)
        if isinstance(found, list):
            return found
        return [] if found is None else [found]

    def apply(self, item: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "type": _get(item, self.type_path) if self.type_path else self.type
        }
        for key, path in self.fields.items():
            value = _get(item, path)
            if value is not None:
                fields[key] = value
        return fields


class RestPoller(base.Provider):
    def __init__(
        self,
        feed: str,
        url: str,
        mapping: FieldMapping,
        *,
        interval_s: float = 5.0,
        token: str | None = None,
        timeout_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(feed, **kwargs)
        self.url = url
        self.mapping = mapping
        self.interval_s = interval_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self._last: dict[str, str] = {}
        self.polls = 0

    async def session(self, sink: base.Sink) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as http:
            while True:
                try:
                    response = await http.get(self.url)
                except httpx.HTTPError as exc:
                    raise base.ProviderError(f"poll failed: {exc}") from exc
                if response.status_code in (401, 403):
                    raise base.FatalProviderError(f"poll refused: HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise base.ProviderError(f"poll failed: HTTP {response.status_code}")
                self.polls += 1
                self.mark_connected()
                batch = self.decode(response.content)
                if batch:
                    self.delivered += len(batch)
                    await sink(batch)
                await asyncio.sleep(self.interval_s)

    def decode(self, body: bytes) -> list[base.Incoming]:
        now = time.time_ns()
        try:
            document = json.loads(body, parse_float=str)
        except ValueError as exc:
            return [
                base.Incoming(None, body.decode("utf-8", "replace"), f"invalid JSON: {exc}", now)
            ]
        out = []
        for item in self.mapping.extract(document):
            raw = json.dumps(item, sort_keys=True, default=str)
            fields = self.mapping.apply(item)
            key = str(fields.get("symbol")) + "|" + str(fields.get("type"))
            if self._last.get(key) == raw:
                continue
            self._last[key] = raw
            out.append(base.Incoming(fields, raw, "", now))
        return out
