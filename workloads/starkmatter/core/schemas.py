"""Base classes for request and response bodies (a schema per direction)."""

from __future__ import annotations

import pydantic


class RequestModel(pydantic.BaseModel):
    """Client input: unknown fields are an error, never silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class ResponseModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
