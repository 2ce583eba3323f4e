"""Requests, their normalized form and cache key, and the schema every answer must follow."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

import pydantic

from starkmatter.core import schemas

Kind = Literal["technical", "news", "portfolio_risk"]
Horizon = Literal["intraday", "1d", "1w", "1m", "3m", "1y"]
Outlook = Literal["bullish", "bearish", "neutral"]
Source = Literal["anthropic", "offline"]

Symbol = Annotated[str, pydantic.Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.\-]+$")]

_SPACES = re.compile(r"\s+")


class AnalyzeRequest(schemas.RequestModel):
    symbols: Annotated[list[Symbol], pydantic.Field(min_length=1, max_length=10)]
    kind: Kind = "technical"
    """What to analyse: ``technical``, ``news`` or ``portfolio_risk``."""
    question: (
        Annotated[str, pydantic.Field(min_length=3, max_length=500), schemas.PrintableText] | None
    ) = None
    horizon: Horizon = "1w"


class NormalizedRequest(pydantic.BaseModel):
    """The request in canonical form: what the cache key is made of."""

    model_config = pydantic.ConfigDict(frozen=True)

    symbols: tuple[str, ...]
    kind: Kind
    question: str | None
    horizon: Horizon
    user_scope: str | None
    """Set for analyses that read one user's data (portfolio risk): never shared across users."""


def normalize(request: AnalyzeRequest, user_id: str) -> NormalizedRequest:
    question = None
    if request.question is not None:
        question = _SPACES.sub(" ", request.question).strip().lower().rstrip("?.! ")
    return NormalizedRequest(
        symbols=tuple(sorted({s.upper() for s in request.symbols})),
        kind=request.kind,
        question=question or None,
        horizon=request.horizon,
        user_scope=user_id if request.kind == "portfolio_risk" else None,
    )


def request_key(normalized: NormalizedRequest, model: str) -> str:
    """The request alone (no data version): where its cached answer lives in Redis."""
    return cache_key(normalized, "", model)


def cache_key(normalized: NormalizedRequest, data_version: str, model: str) -> str:
    """Same request over the same data with the same model: the same key, the same answer."""
    material = json.dumps(
        {"request": normalized.model_dump(mode="json"), "data": data_version, "model": model},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


Text = Annotated[str, pydantic.Field(min_length=1)]


class Analysis(pydantic.BaseModel):
    """What the model must return (as the input of the forced ``submit_analysis`` tool)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    summary: Annotated[str, pydantic.Field(min_length=20)]
    outlook: Outlook
    confidence: Annotated[float, pydantic.Field(ge=0, le=1)]
    symbols: Annotated[list[str], pydantic.Field(min_length=1)]
    key_points: Annotated[list[Text], pydantic.Field(min_length=1, max_length=8)]
    risks: Annotated[list[Text], pydantic.Field(max_length=8)] = []


TOOL_NAME = "submit_analysis"


def tool_definition() -> dict[str, Any]:
    return {
        "name": TOOL_NAME,
        "description": "Submit the finished market analysis. Call exactly once.",
        "input_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["summary", "outlook", "confidence", "symbols", "key_points"],
            "properties": {
                "summary": {"type": "string", "description": "2-5 sentences, plain text."},
                "outlook": {"type": "string", "enum": ["bullish", "bearish", "neutral"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "symbols": {"type": "array", "items": {"type": "string"}},
                "key_points": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": 8,
                },
                "risks": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            },
        },
    }
