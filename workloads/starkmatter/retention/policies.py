"""A RetentionPolicy spec (``STARKMATTER_RETENTION_CONFIG``), with the seed's table as the
default: trade data 7 years, user activity 3, market data 2, logs 90 days, sessions 30.

A RetentionPolicy CR states ages in days (``olderThanDays``) and they are taken as days.
The seed's year-based entries are calendar years: its rules carry the years (set only by
``default``, never read from a spec) and their cutoff is the calendar anniversary."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from starkmatter.core import settings
from starkmatter.retention import datasets

Action = Literal["archive", "delete", "archiveThenDelete"]


class Rule(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    dataset: str
    older_than_days: Annotated[int, pydantic.Field(ge=1, le=36500, alias="olderThanDays")]
    action: Action = "archive"
    _years: int | None = pydantic.PrivateAttr(default=None)

    @classmethod
    def in_years(cls, dataset: str, years: int, action: Action) -> Rule:
        """A rule on calendar years; ``older_than_days`` is the nominal ``365 * years``."""
        rule = cls(dataset=dataset, older_than_days=365 * years, action=action)
        rule._years = years
        return rule

    @property
    def age(self) -> str:
        return f"{self._years} years" if self._years else f"{self.older_than_days} days"

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        """Rows older than this are acted upon."""
        if self._years:
            return datasets.cutoff_years(now, self._years)
        return datasets.cutoff(now, self.older_than_days)

    @pydantic.model_validator(mode="after")
    def _known(self) -> Rule:
        spec = datasets.DATASETS.get(self.dataset)
        if spec is None:
            raise ValueError(f"unknown dataset {self.dataset!r}")
        if not spec.purgeable and self.action != "archive":
            raise ValueError(f"{self.dataset} is append-only: its rule must use action archive")
        return self


class Archive(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    url: str
    endpoint: str | None = None
    lock_days: int | None = pydantic.Field(default=None, ge=1, alias="lockDays")


class Policy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str = "default"
    rules: Annotated[list[Rule], pydantic.Field(min_length=1)]
    archive: Archive | None = None
    suspend: bool = False
    part_rows: int = pydantic.Field(default=50_000, ge=1, alias="partRows")

    @pydantic.model_validator(mode="after")
    def _archive_needed(self) -> Policy:
        if any(r.action != "delete" for r in self.rules) and self.archive is None:
            raise ValueError("archive is required when any rule archives")
        names = [r.dataset for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("each dataset may appear in only one rule")
        return self


def default(archive_url: str) -> Policy:
    """The seed's retention table over every data set, archived then purged (audit: archived)."""
    return Policy(
        name="default",
        archive=Archive(url=archive_url),
        rules=[_seed_rule(d) for d in datasets.DATASETS.values()],
    )


def _seed_rule(spec: datasets.Dataset) -> Rule:
    action: Action = "archiveThenDelete" if spec.purgeable else "archive"
    if spec.default_years is not None:
        return Rule.in_years(spec.name, spec.default_years, action)
    return Rule(dataset=spec.name, older_than_days=spec.default_days, action=action)


def load(name: str, path: Path | None = None, *, data_dir: Path | None = None) -> Policy:
    raw = path or os.environ.get("STARKMATTER_RETENTION_CONFIG")
    if raw is None:
        if data_dir is None:
            raise settings.SettingsError("STARKMATTER_RETENTION_CONFIG is not set")
        return default((data_dir / "archive").resolve().as_uri()).model_copy(update={"name": name})
    try:
        data = json.loads(Path(raw).read_text(encoding="utf-8"))
        return Policy.model_validate({**data.get("spec", data), "name": name})
    except (OSError, ValueError) as exc:
        raise settings.SettingsError(f"STARKMATTER_RETENTION_CONFIG: {exc}") from None
