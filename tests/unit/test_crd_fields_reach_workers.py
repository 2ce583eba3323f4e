"""Every spec field a worker reads exists in its CRD (the apiserver prunes unknown fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from starkmatter.news import config as news_config
from starkmatter.retention import policies

CRDS = Path(__file__).resolve().parents[2] / "crds"


def _spec_schema(kind_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = schema["properties"]["spec"]
    return spec


def _aliases(model: type[pydantic.BaseModel], *, skip: set[str]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if name not in skip}


@pytest.mark.parametrize(
    ("crd_file", "path", "model", "skip"),
    [
        ("newssources.starkmatter.io.yaml", [], news_config.NewsSource, {"name"}),
        ("newssources.starkmatter.io.yaml", ["fieldMap"], news_config.FieldMap, set()),
        ("retentionpolicies.starkmatter.io.yaml", [], policies.Policy, {"name"}),
        ("retentionpolicies.starkmatter.io.yaml", ["archive"], policies.Archive, set()),
    ],
)
def test_worker_config_fields_are_declared_in_the_crd(
    crd_file: str, path: list[str], model: type[pydantic.BaseModel], skip: set[str]
) -> None:
    schema = _spec_schema(crd_file)
    for step in path:
        schema = schema["properties"][step]
    declared = set(schema["properties"])
    assert _aliases(model, skip=skip) - declared == set()


def test_retention_archive_formats_in_the_crd_are_the_ones_written() -> None:
    archive = _spec_schema("retentionpolicies.starkmatter.io.yaml")["properties"]["archive"]
    assert archive["properties"]["format"]["enum"] == ["jsonl.gz"]
