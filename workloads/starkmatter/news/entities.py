"""Ticker and company extraction against the symbol universe. Pure.

Three kinds of evidence: a cashtag (``$AAPL``), an exchange reference (``(NASDAQ: AAPL)``)
or a company's name; a bare upper-case token counts too unless it is also an ordinary word
or abbreviation (``IT``, ``ALL``, ``SEC``), which needs one of the other kinds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_AMBIGUOUS = (
    "A I AI ALL ARE AT BE BIG CAN CAT CEO CFO CPI DD EPS ETF F FED FOR GDP GO HAS IPO IT K KEY "
    "M MA NEW NOW ON ONE OR OUT PE REAL SEC SO T TV UK US USA V WELL"
)
AMBIGUOUS = frozenset(_AMBIGUOUS.split())
_CASHTAG = re.compile(r"\$([A-Z]{1,5}(?:\.[A-Z])?)\b")
_EXCHANGE = re.compile(
    r"\((?:NASDAQ|Nasdaq|NYSE|NYSE American|NYSEARCA|AMEX|OTC)\s*:\s*([A-Z]{1,5}(?:\.[A-Z])?)\)"
)
_BARE = re.compile(r"(?<![\w$.])([A-Z]{2,5}(?:\.[A-Z])?)(?![\w])")

SAMPLE_UNIVERSE = Path(__file__).parent / "samples" / "universe.json"


class Universe:
    """Known symbols and their company names (the first name is the canonical one)."""

    def __init__(self, names: Mapping[str, tuple[str, ...]]) -> None:
        self.names = dict(names)
        alternatives = sorted(
            ((name, symbol) for symbol, names in self.names.items() for name in names),
            key=lambda pair: -len(pair[0]),
        )
        self.by_name = {name.lower(): s for name, s in alternatives}
        # Longest names first, so "Apple Inc." wins over "Apple".
        pattern = "|".join(re.escape(name) for name, _ in alternatives) or r"(?!)"
        self.names_re = re.compile(rf"(?<![\w&])({pattern})(?![\w&])")

    @classmethod
    def of(
        cls, symbols: Iterable[str], names: Mapping[str, Iterable[str]] | None = None
    ) -> Universe:
        names = names or {}
        merged = {s.upper(): tuple(names.get(s, ())) for s in symbols}
        for symbol, alternatives in names.items():
            merged.setdefault(symbol.upper(), tuple(alternatives))
        return cls(merged)

    @classmethod
    def load(cls, path: Path = SAMPLE_UNIVERSE, extra: Iterable[str] = ()) -> Universe:
        data: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))
        return cls.of(list(data) + [s.upper() for s in extra], data)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.names

    def company(self, symbol: str) -> str | None:
        names = self.names.get(symbol)
        return names[0] if names else None


@dataclasses.dataclass(frozen=True)
class Mentions:
    symbols: tuple[str, ...]
    companies: tuple[str, ...]


def extract(text: str, universe: Universe) -> Mentions:
    found: set[str] = set()
    for pattern in (_CASHTAG, _EXCHANGE):
        found.update(m for m in pattern.findall(text) if m in universe)
    for match in universe.names_re.finditer(text):
        found.add(universe.by_name[match.group(1).lower()])
    for token in _BARE.findall(text):
        if token in universe and token not in AMBIGUOUS:
            found.add(token)
    symbols = tuple(sorted(found))
    companies = tuple(c for s in symbols if (c := universe.company(s)) is not None)
    return Mentions(symbols, companies)
