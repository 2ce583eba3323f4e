"""Steps 3-5 of the pipeline for one article: clean, analyze, classify. Pure.

The content hash is taken over the cleaned, case-folded title and text, so the same story
syndicated under another URL (or re-sent with different markup) is stored once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import re

from starkmatter.core import schemas
from starkmatter.news import classifying, cleaning, entities, parsing, sentiment

SUMMARY_MAX = 600
BODY_MAX = 50_000

_EDGAR_FORMS = {
    "10-K": "earnings", "10-Q": "earnings", "20-F": "earnings", "6-K": "earnings",
    "S-4": "mna", "SC 13D": "mna", "SC TO-T": "mna", "DEFM14A": "mna", "425": "mna",
}  # fmt: skip
_SUFFIXES = re.compile(r"\b(inc|corp|corporation|co|company|ltd|plc|the|group|holdings)\b\.?")


@dataclasses.dataclass(frozen=True)
class Article:
    url: str
    content_hash: bytes
    title: str
    summary: str
    body: str
    author: str | None
    published_at: dt.datetime
    category: str
    sentiment: decimal.Decimal
    sentiment_label: str
    symbols: tuple[str, ...]
    companies: tuple[str, ...]


def plain(text: str) -> str:
    """``text`` as PostgreSQL and UTF-8 take it: no control characters (tab and newline
    stay), lone surrogates (from a JSON escape) replaced."""
    return schemas.without_control_characters(text).encode("utf-8", "replace").decode("utf-8")


def content_hash(title: str, text: str) -> bytes:
    canonical = " ".join(f"{title}\n{text}".casefold().split())
    return hashlib.sha256(canonical.encode()).digest()


def _normal_name(name: str) -> str:
    return " ".join(_SUFFIXES.sub(" ", re.sub(r"[^\w\s]", " ", name.lower())).split())


def filer_symbol(filer: str, universe: entities.Universe) -> str | None:
    """EDGAR names filers in capitals with legal suffixes ("APPLE INC."): compare cores."""
    wanted = _normal_name(filer)
    for symbol, names in universe.names.items():
        if any(_normal_name(n) == wanted for n in names):
            return symbol
    return None


def edgar_category(form: str, text: str) -> str:
    if form in _EDGAR_FORMS:
        return _EDGAR_FORMS[form]
    if form == "8-K" and re.search(r"item 2\.02|results of operations", text, re.IGNORECASE):
        return "earnings"
    if form == "8-K" and re.search(r"item 1\.01|item 2\.01|merger|acquisition", text, re.I):
        return "mna"
    return "regulatory"


def process(raw: parsing.RawArticle, universe: entities.Universe, *, now: dt.datetime) -> Article:
    title = plain(cleaning.one_line(cleaning.clean_html(raw.title)))
    summary = plain(cleaning.clean_html(raw.summary))
    body = plain(cleaning.clean_html(raw.body)) if raw.body else ""
    if summary == body:
        body = ""
    text = "\n".join(part for part in (summary, body) if part)
    mentions = entities.extract(f"{title}\n{text}", universe)
    symbols = set(mentions.symbols) | {s for s in raw.symbols if s in universe}
    if raw.filing_form is not None:
        category = edgar_category(raw.filing_form, f"{title}\n{text}")
        if raw.filer and (symbol := filer_symbol(raw.filer, universe)):
            symbols.add(symbol)
    else:
        category = classifying.classify(title, text)
    mood = sentiment.score(f"{title}. {text}")
    ordered = tuple(sorted(symbols))
    published = raw.published_at or now
    return Article(
        url=plain(raw.url).strip(),
        content_hash=content_hash(title, text),
        title=title[:500],
        summary=(summary or body)[:SUMMARY_MAX],
        body=body[:BODY_MAX],
        author=None if raw.author is None else plain(raw.author),
        # A date in the future is a source's clock or time zone error, not news from then.
        published_at=min(published, now),
        category=category,
        sentiment=mood.score,
        sentiment_label=mood.label,
        symbols=ordered,
        companies=tuple(c for s in ordered if (c := universe.company(s)) is not None),
    )
