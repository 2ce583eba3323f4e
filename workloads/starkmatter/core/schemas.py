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
