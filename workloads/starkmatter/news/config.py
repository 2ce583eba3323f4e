"""A NewsSource spec (the custom resource's ``spec``, as JSON in ``STARKMATTER_NEWS_CONFIG``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from starkmatter.core import settings


class FieldMap(pydantic.BaseModel):
    """Where a JSON API keeps each field: dotted paths into one item (``items`` into the body)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    items: str = "items"
    url: str = "url"
    title: str = "title"
    summary: str = "summary"
    body: str = "body"
    published: str = "published_at"
    author: str = "author"
    symbols: str = "symbols"


class NewsSource(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str = "default"
    mode: Literal["polling", "streaming"] = "polling"
    format: Literal["rss", "atom", "json", "sse", "websocket"] = "rss"
    url: Annotated[str, pydantic.Field(min_length=1, max_length=2048)]
    categories: tuple[str, ...] = ("general",)
    suspend: bool = False
    field_map: FieldMap = pydantic.Field(default_factory=FieldMap, alias="fieldMap")
    poll_interval_s: float = pydantic.Field(default=300.0, gt=0, alias="pollIntervalSeconds")
    user_agent: str = pydantic.Field(
        default="StarkMatter news fetcher (ops@starkmatter.invalid)", alias="userAgent"
    )
    """SEC EDGAR refuses requests without a descriptive User-Agent with a contact address."""


def load(name: str, path: Path | None = None) -> NewsSource:
    """Read the spec from ``path`` or ``STARKMATTER_NEWS_CONFIG``; refuse a bad one clearly."""
    raw_path = path or os.environ.get("STARKMATTER_NEWS_CONFIG")
    if raw_path is None:
        raise settings.SettingsError("STARKMATTER_NEWS_CONFIG is not set")
    try:
        data = json.loads(Path(raw_path).read_text(encoding="utf-8"))
        data = data.get("spec", data)
        return NewsSource.model_validate({**data, "name": name})
    except (OSError, ValueError) as exc:
        raise settings.SettingsError(f"STARKMATTER_NEWS_CONFIG: {exc}") from None
