"""Finance-specific sentiment: a lexicon in the spirit of Loughran-McDonald, with negation
and intensifiers. Pure; scores in [-1, 1] as exact decimals."""

from __future__ import annotations

import dataclasses
import decimal
import re

_POSITIVE = """
    beat beats exceeded exceeds surpassed surpass record upgrade upgraded upgrades outperform
    outperformed raise raised raises boost boosted growth grew gain gains gained profit profitable
    rally rallied surge surged soar soared strong stronger robust accelerate accelerated expand
    expanded expansion improve improved improvement rebound rebounded upbeat optimistic bullish
    approval approved win won wins breakthrough dividend buyback buybacks tops topped higher jump
    jumped climbs climbed"""
POSITIVE = frozenset(_POSITIVE.split())
_NEGATIVE = """
    miss missed misses shortfall downgrade downgraded downgrades underperform underperformed
    cut cuts lowered lower loss losses lost decline declined declines drop dropped fall fell
    plunge plunged slump slumped weak weaker weakness warn warned warning warns lawsuit sued
    investigation probe fraud penalty fine fined recall recalled layoff layoffs bankruptcy default
    defaulted impairment writedown restatement delay delayed halt halted bearish pessimistic
    concern concerns risk risks volatile slowdown recession downturn tumble tumbled sink sank
    subpoena violation violations breach"""
NEGATIVE = frozenset(_NEGATIVE.split())
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "without",
        "neither",
        "nor",
        "hardly",
        "didn't",
        "doesn't",
        "don't",
        "isn't",
        "wasn't",
    ]
)
INTENSIFIERS = {"sharply": 1.5, "significantly": 1.5, "strongly": 1.5, "slightly": 0.5,
                "record": 1.5, "massive": 1.5, "modestly": 0.5}  # fmt: skip
NEUTRAL_BAND = decimal.Decimal("0.1")

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_Q = decimal.Decimal("0.0001")


@dataclasses.dataclass(frozen=True)
class Sentiment:
    score: decimal.Decimal
    label: str
    positive: int
    negative: int


def score(text: str) -> Sentiment:
    """(pos - neg) / (pos + neg + 1) over weighted hits; a negation in the 3 words before a
    hit flips it; an intensifier next to it scales it."""
    words = _WORD.findall(text.lower())
    pos = neg = 0.0
    npos = nneg = 0
    for i, word in enumerate(words):
        polarity = 1 if word in POSITIVE else -1 if word in NEGATIVE else 0
        if not polarity:
            continue
        window = words[max(0, i - 3) : i]
        if any(w in NEGATIONS for w in window):
            polarity = -polarity
        # "sharply lower" and "fell sharply": an intensifier on either side counts.
        before = INTENSIFIERS.get(words[i - 1], 1.0) if i else 1.0
        after = INTENSIFIERS.get(words[i + 1], 1.0) if i + 1 < len(words) else 1.0
        weight = before if before != 1.0 else after
        if polarity > 0:
            pos += weight
            npos += 1
        else:
            neg += weight
            nneg += 1
    raw = (pos - neg) / (pos + neg + 1)
    value = decimal.Decimal(repr(raw)).quantize(_Q)
    label = (
        "positive" if value > NEUTRAL_BAND else "negative" if value < -NEUTRAL_BAND else "neutral"
    )
    return Sentiment(value, label, npos, nneg)
