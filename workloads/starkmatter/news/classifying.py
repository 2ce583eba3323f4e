"""Categories of the seed: earnings, M&A, analyst action, regulatory, macro, other. Pure.

Each category has weighted phrases; the highest total wins, ties go to the more specific
category (the order of :data:`CATEGORIES`). The title counts double.
"""

from __future__ import annotations

import re

CATEGORIES = ("earnings", "mna", "analyst_action", "regulatory", "macro", "other")

_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "earnings": (
        ("earnings", 2), ("quarterly results", 2), ("eps", 2), ("revenue", 1), ("guidance", 1),
        ("quarter", 1), ("fiscal", 1), ("profit", 1), ("net income", 2), ("beat estimates", 2),
        ("missed estimates", 2), ("10-q", 2), ("10-k", 2), ("results", 1),
    ),
    "mna": (
        ("acquire", 2), ("acquires", 2), ("acquisition", 2), ("merger", 2), ("merge", 2),
        ("takeover", 2), ("buyout", 2), ("deal to buy", 2), ("tender offer", 2),
        ("to buy", 1), ("stake in", 1), ("divest", 1), ("spin-off", 1), ("spinoff", 1),
    ),
    "analyst_action": (
        ("upgrade", 2), ("upgrades", 2), ("upgraded", 2), ("downgrade", 2), ("downgrades", 2),
        ("downgraded", 2), ("price target", 2), ("initiates coverage", 2), ("analyst", 1),
        ("outperform", 1), ("underperform", 1), ("overweight", 1), ("underweight", 1),
        ("rating", 1), ("reiterates", 1),
    ),
    "regulatory": (
        ("sec", 2), ("8-k", 2), ("filing", 1), ("regulator", 2), ("regulatory", 2),
        ("antitrust", 2), ("ftc", 2), ("doj", 2), ("lawsuit", 1), ("investigation", 1),
        ("fine", 1), ("fined", 2), ("settlement", 1), ("compliance", 1), ("approval", 1),
        ("fda", 2), ("subpoena", 2), ("form 4", 2),
    ),
    "macro": (
        ("federal reserve", 2), ("fed", 2), ("interest rate", 2), ("rates", 1), ("inflation", 2),
        ("cpi", 2), ("gdp", 2), ("unemployment", 2), ("jobs report", 2), ("payrolls", 2),
        ("central bank", 2), ("treasury yields", 2), ("recession", 1), ("tariff", 1),
        ("economy", 1), ("ecb", 2),
    ),
}  # fmt: skip

_WEIGHTS: dict[str, list[tuple[str, float]]] = {}
for _category, _rules in _RULES.items():
    for _phrase, _weight in _rules:
        _WEIGHTS.setdefault(_phrase, []).append((_category, _weight))
# One pass per text: every phrase in one alternation, longest first so that "deal to buy"
# is one match, not "deal to buy" and "to buy".
_PHRASES = re.compile(
    r"(?<![\w-])("
    + "|".join(re.escape(p) for p in sorted(_WEIGHTS, key=len, reverse=True))
    + r")(?![\w-])"
)


def scores(title: str, text: str) -> dict[str, float]:
    totals = dict.fromkeys(_RULES, 0.0)
    for source, factor in ((title, 2), (text, 1)):
        for match in _PHRASES.finditer(source.lower()):
            for category, weight in _WEIGHTS[match.group(1)]:
                totals[category] += factor * weight
    return totals


def classify(title: str, text: str, *, minimum: float = 2.0) -> str:
    totals = scores(title, text)
    best = max(CATEGORIES[:-1], key=lambda c: (totals[c], -CATEGORIES.index(c)))
    return best if totals[best] >= minimum else "other"
