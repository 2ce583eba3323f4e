"""Base classes for request and response bodies (a schema per direction)."""

from __future__ import annotations

import decimal
import re
from typing import Annotated, Any

import pydantic

_NUMBER_TEXT_MAX = 40


def short_number(value: Any) -> Any:
    # Decimal places are counted after trailing zeros are dropped, so "1." followed by
    # 17,000 zeros would pass them, then fail in the database driver (and with it every
    # order written in the same statement).
    if isinstance(value, str) and len(value) > _NUMBER_TEXT_MAX:
        raise ValueError(f"a number is at most {_NUMBER_TEXT_MAX} characters")
    return value


Amount = Annotated[
    decimal.Decimal,
    pydantic.BeforeValidator(short_number),
    pydantic.Field(max_digits=18, decimal_places=8),
]
"""A quantity or price a client sends: finite, at most 10 digits before the point and 8
after it (what the order tables and the risk arithmetic are sized for)."""

SHOWN_PLACES = 8
"""The most decimal places a price, amount, P&L or portfolio metric is shown with: as many
as :data:`Amount` takes, so no price or quantity a client can send is ever rounded."""

_SHOWN_QUANTUM = decimal.Decimal(1).scaleb(-SHOWN_PLACES)
# Enough digits for any value PostgreSQL's numeric holds: quantizing in the default
# 28-digit context raises InvalidOperation above 10**20.
_SHOWING = decimal.Context(prec=decimal.MAX_PREC, rounding=decimal.ROUND_HALF_EVEN)


def shown(value: decimal.Decimal) -> decimal.Decimal:
    """``value`` as a trader sees it: rounded half-even to :data:`SHOWN_PLACES` places.

    Presentation only: what is stored and computed with (average costs, P&L, reservations,
    risk) stays exact; only responses and messages go through this.
    """
    if not value.is_finite():
        return value
    return value.quantize(_SHOWN_QUANTUM, context=_SHOWING)


def shown_text(value: decimal.Decimal) -> str:
    """The text of :func:`shown`: plain digits, never an exponent (``"1E-8"``), no trailing
    zeros and no ``-0``, as the market API prints prices: ``"100.25"``, ``"3"``,
    ``"100.33333333"``."""
    text = format(shown(value), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


Shown = Annotated[
    decimal.Decimal,
    pydantic.PlainSerializer(shown_text, return_type=str, when_used="json"),
]
"""A price, amount, P&L or metric in a response: the exact value in the model, shown in
JSON by :func:`shown_text` (at most 8 places, rounded half-even)."""

PrintableText = pydantic.StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")
"""Text without control characters (PostgreSQL refuses NUL in text)."""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_control_characters(text: str) -> str:
    """``text`` from a source we do not control, as PostgreSQL takes it: control characters
    removed, except tab, newline and carriage return."""
    return _CONTROL.sub("", text)


class RequestModel(pydantic.BaseModel):
    """Client input: unknown fields are an error, never silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class ResponseModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
