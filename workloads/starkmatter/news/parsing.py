"""Feed bodies to raw articles: RSS/Atom (feedparser), SEC EDGAR filing feeds, JSON APIs
through a field map. Pure: bytes in, records out."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
import re
from typing import Any

import feedparser

from starkmatter.news import config


class FeedError(Exception):
    """The body is not a feed of the declared format."""


@dataclasses.dataclass(frozen=True)
class RawArticle:
    url: str
    title: str
    summary: str
    """Possibly HTML."""
    body: str
    """Possibly HTML."""
    author: str | None
    published_at: dt.datetime | None
    symbols: tuple[str, ...] = ()
    """Symbols the source itself tags the article with."""
    filing_form: str | None = None
    """SEC form type (8-K, 10-Q, ...) for EDGAR filings."""
    filer: str | None = None


_EDGAR_TITLE = re.compile(
    r"^(?P<form>[A-Z0-9/\-]+(?: [A-Z0-9/\-]+)?) - (?P<filer>.+?) \((?P<cik>\d{10})\)"
)


_UNREADABLE_TIME = (ValueError, OverflowError, OSError)
"""what datetime raises for a time it cannot represent (year 10000, 1e400, NaN)"""


def _struct_to_dt(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromtimestamp(calendar.timegm(value), tz=dt.UTC)
    except _UNREADABLE_TIME:
        return None  # a date no calendar holds: the article keeps its arrival time


def parse_feed(body: bytes) -> list[RawArticle]:
    feed = feedparser.parse(body)
    if feed.bozo and not feed.entries:
        raise FeedError(f"not a feed: {feed.get('bozo_exception')!s}")
    out = []
    for entry in feed.entries:
        link = entry.get("link") or entry.get("id")
        title = entry.get("title", "")
        if not link or not title:
            continue
        content = entry.get("content") or []
        body_html = content[0].get("value", "") if content else ""
        published = _struct_to_dt(entry.get("published_parsed") or entry.get("updated_parsed"))
        tags = tuple(
            t["term"].lstrip("$").upper()
            for t in entry.get("tags", [])
            if t.get("term") and re.fullmatch(r"\$?[A-Za-z]{1,5}", t["term"])
        )
        form = filer = None
        match = _EDGAR_TITLE.match(title)
        if match and ("sec.gov" in link or "edgar" in link.lower()):
            form, filer = match["form"], match["filer"]
            tags = ()
        out.append(
            RawArticle(
                url=link,
                title=title,
                summary=entry.get("summary", ""),
                body=body_html,
                author=entry.get("author"),
                published_at=published,
                symbols=tags,
                filing_form=form,
                filer=filer,
            )
        )
    return out


def _path(item: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if value > 10**11 else value
            return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        text = str(value).strip().replace("Z", "+00:00")
        moment = dt.datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        moment.astimezone(dt.UTC)  # an offset can push a valid local time past year 9999
    except _UNREADABLE_TIME:
        return None
    return moment


def parse_json(body: bytes, fields: config.FieldMap) -> list[RawArticle]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise FeedError(f"not JSON: {exc!s}") from None
    items = _path(data, fields.items) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise FeedError(f"no list at {fields.items!r}")
    out = []
    for item in items:
        url, title = _path(item, fields.url), _path(item, fields.title)
        if not isinstance(url, str) or not isinstance(title, str) or not url or not title:
            continue
        symbols = _path(item, fields.symbols)
        if isinstance(symbols, str):
            symbols = symbols.split(",")
        out.append(
            RawArticle(
                url=url,
                title=title,
                summary=str(_path(item, fields.summary) or ""),
                body=str(_path(item, fields.body) or ""),
                author=(str(a) if (a := _path(item, fields.author)) else None),
                published_at=_timestamp(_path(item, fields.published)),
                symbols=tuple(
                    str(s).strip().lstrip("$").upper()
                    for s in (symbols if isinstance(symbols, list) else [])
                    if str(s).strip()
                ),
            )
        )
    return out


def parse(body: bytes, source: config.NewsSource) -> list[RawArticle]:
    if source.format == "json":
        return parse_json(body, source.field_map)
    if source.format in ("rss", "atom"):
        return parse_feed(body)
    raise FeedError(f"format {source.format!r} is streamed, not polled")
