"""The seed's response checks: format, content filter, length limits, relevance. Pure."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import pydantic

from starkmatter.ai import models
from starkmatter.core import schemas

SUMMARY_MAX_CHARS = 1200
ITEM_MAX_CHARS = 280

# Promises no analysis may make: rejected outright, never rewritten.
_FORBIDDEN = (
    (
        "guaranteed_returns",
        re.compile(
            r"\b(guaranteed?\s+(profit|return|gain)s?|risk[- ]free\s+(profit|return)s?"
            r"|can(no|')t\s+lose|sure\s+thing|100\s*%\s+(certain|sure))\b",
            re.IGNORECASE,
        ),
    ),
    (
        "prompt_leak",
        re.compile(r"\b(system prompt|my instructions|ignore (all|previous) instructions)\b", re.I),
    ),
    (
        "insider_information",
        re.compile(r"\b(insider (tip|information)|non-public information)\b", re.IGNORECASE),
    ),
)
# Personal data and links: removed from the text, the answer survives.
_REDACT = (
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    # Phone numbers need separators, so that prices and volumes never match.
    re.compile(r"(?<![\d.])(?:\+\d{1,3}[\s-])?\(?\d{3}\)?[\s-]\d{3}[\s-]\d{4}(?![\d.])"),
    re.compile(r"https?://\S+", re.IGNORECASE),
)
_REDACTED = "[removed]"

_STOPWORDS = frozenset(
    [
        "a", "an", "the", "is", "are", "was", "were", "be", "to", "of", "and", "or", "in", "on",
        "for", "with", "what", "how", "why", "when", "which", "will", "would", "should", "could",
        "do", "does", "did", "it", "its", "this", "that", "these", "those", "my", "our", "your",
        "about", "over", "next", "vs", "versus", "than", "at", "by", "from", "as", "into", "up",
        "down", "me", "i", "we", "you",
    ]
)  # fmt: skip
_KIND_TERMS: dict[str, tuple[str, ...]] = {
    "technical": (
        "rsi", "macd", "moving average", "sma", "ema", "bollinger", "support", "resistance",
        "trend", "momentum", "volatility", "overbought", "oversold", "volume", "price",
    ),
    "news": (
        "news", "headline", "report", "sentiment", "announce", "earnings", "filing",
        "analyst", "guidance", "article", "coverage",
    ),
    "portfolio_risk": (
        "position", "exposure", "concentration", "drawdown", "risk", "diversif", "weight",
        "loss", "hedge", "volatility", "portfolio",
    ),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Problem:
    code: str
    detail: str


@dataclasses.dataclass(frozen=True)
class CheckReport:
    analysis: models.Analysis | None
    relevance: float
    problems: tuple[Problem, ...]
    redactions: int = 0
    truncated: bool = False

    @property
    def passed(self) -> bool:
        return self.analysis is not None and not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "relevance": round(self.relevance, 3),
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "redactions": self.redactions,
            "truncated": self.truncated,
        }


def validate_format(raw: Any) -> tuple[models.Analysis | None, list[Problem]]:
    try:
        return models.Analysis.model_validate(raw), []
    except pydantic.ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        return None, [Problem("format", details)]


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…", True


def _redact(text: str) -> tuple[str, int]:
    count = 0
    for pattern in _REDACT:
        text, n = pattern.subn(_REDACTED, text)
        count += n
    return text, count


def filter_content(analysis: models.Analysis) -> tuple[models.Analysis, list[Problem], int, bool]:
    """Reject forbidden claims; redact personal data and links; cap lengths."""
    texts = [analysis.summary, *analysis.key_points, *analysis.risks]
    problems = [
        Problem(code, f"answer contains {match.group(0)!r}")
        for code, pattern in _FORBIDDEN
        for text in texts
        if (match := pattern.search(text))
    ]
    redactions = 0
    truncated = False

    def clean(text: str, limit: int) -> str:
        nonlocal redactions, truncated
        text = schemas.without_control_characters(text)
        text, n = _redact(text)
        redactions += n
        text, cut = _truncate(text, limit)
        truncated = truncated or cut
        return text

    cleaned = analysis.model_copy(
        update={
            "summary": clean(analysis.summary, SUMMARY_MAX_CHARS),
            "key_points": [clean(p, ITEM_MAX_CHARS) for p in analysis.key_points],
            "risks": [clean(r, ITEM_MAX_CHARS) for r in analysis.risks],
            "symbols": sorted(
                {
                    t.upper()
                    for s in analysis.symbols
                    if (t := schemas.without_control_characters(s).strip())
                }
            ),
        }
    )
    return cleaned, problems, redactions, truncated


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS}


def relevance(
    analysis: models.Analysis, symbols: Sequence[str], kind: str, question: str | None
) -> float:
    """0..1: requested symbols covered (60%) and the question's or the kind's terms (40%)."""
    text = " ".join([analysis.summary, *analysis.key_points, *analysis.risks]).lower()
    named = {s.upper() for s in analysis.symbols}
    wanted = [s.upper() for s in symbols]
    covered = sum(
        1 for s in wanted if s in named or re.search(rf"\b{re.escape(s.lower())}\b", text)
    )
    symbol_score = covered / len(wanted) if wanted else 1.0
    if question:
        terms = _words(question) - {s.lower() for s in wanted}
        words = _words(text)
        topic_score = len(terms & words) / len(terms) if terms else 1.0
        # A question may be answered in other words; the kind's vocabulary counts too.
        topic_score = max(topic_score, _kind_score(text, kind))
    else:
        topic_score = _kind_score(text, kind)
    return round(0.6 * symbol_score + 0.4 * topic_score, 4)


def _kind_score(text: str, kind: str) -> float:
    terms = _KIND_TERMS.get(kind, ())
    hits = sum(1 for t in terms if t in text)
    return min(1.0, hits / 3)


def check(
    raw: Any,
    *,
    symbols: Sequence[str],
    kind: str,
    question: str | None,
    min_relevance: float,
) -> CheckReport:
    """Run every check in order; the report says whether the answer may be shown."""
    analysis, problems = validate_format(raw)
    if analysis is None:
        return CheckReport(None, 0.0, tuple(problems))
    cleaned, problems, redactions, truncated = filter_content(analysis)
    score = relevance(cleaned, symbols, kind, question)
    if score < min_relevance:
        problems.append(Problem("irrelevant", f"relevance {score:.2f} below {min_relevance:.2f}"))
    return CheckReport(cleaned, score, tuple(problems), redactions, truncated)
